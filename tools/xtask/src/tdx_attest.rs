//! TDX attestation end to end under TCG, with the TDX model ROM: the model's quoting side signs
//! with a PCK chain made here in Intel's shape (OpenSSL: a test root, a Platform CA, a PCK
//! certificate carrying Intel's SGX extensions written out byte by byte from Intel's PCK
//! certificate profile, a TCB signing certificate, the root CA CRL and the PCK CRL), and the
//! collateral (TCB info, QE identity) is written and signed here too. The broker accepts that
//! root only through --tdx-test-root.
//!
//! The first boot of the encrypted demo disk attests with a quote and its CC event log, gets
//! the secret and reaches the root filesystem; refused, each with its reason in the serial log
//! and the broker's log: an MRTD that is not a reference value, an event log that does not
//! replay to the quoted RTMRs, RTMRs that are not the reference values, a debug TD; and, in the
//! firmware before any key is asked for, an MRCONFIGID that is not the disk's init-data digest.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::qemu;
use crate::snp_test::{Broker, openssl};

/// A DER TLV.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match content.len() {
        n if n < 0x80 => out.push(n as u8),
        n if n < 0x100 => out.extend([0x81, n as u8]),
        n => out.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend(content);
    out
}

/// Intel's SGX extensions OID arc 1.2.840.113741.1.13.1, then `sub`.
fn sgx_oid(sub: &[u8]) -> Vec<u8> {
    tlv(0x06, &[&[0x2a, 0x86, 0x48, 0x86, 0xf8, 0x4d, 0x01, 0x0d, 0x01][..], sub].concat())
}

/// The PCK certificate's SGX extensions (Intel SGX PCK Certificate and CRL Profile): PPID, TCB
/// (components 1-16, PCESVN, CPUSVN), PCE-ID, FMSPC.
fn sgx_extensions(components: [u8; 16], pcesvn: u8, fmspc: [u8; 6]) -> Vec<u8> {
    let entry = |oid: Vec<u8>, value: Vec<u8>| tlv(0x30, &[oid, value].concat());
    let mut tcb = Vec::new();
    for (i, svn) in components.iter().enumerate() {
        tcb.extend(entry(sgx_oid(&[2, i as u8 + 1]), tlv(0x02, &[*svn])));
    }
    tcb.extend(entry(sgx_oid(&[2, 17]), tlv(0x02, &[pcesvn])));
    tcb.extend(entry(sgx_oid(&[2, 18]), tlv(0x04, &components)));
    let body = [
        entry(sgx_oid(&[1]), tlv(0x04, &[0x5A; 16])),
        entry(sgx_oid(&[2]), tlv(0x30, &tcb)),
        entry(sgx_oid(&[3]), tlv(0x04, &[0, 0])),
        entry(sgx_oid(&[4]), tlv(0x04, &fmspc)),
    ]
    .concat();
    tlv(0x30, &body)
}

/// The P-256 private scalar of an OpenSSL EC key (SEC1 DER `02 01 01 04 20 <32 bytes>`).
fn p256_scalar(dir: &Path, key: &str) -> Result<[u8; 32]> {
    let der = Command::new("openssl").current_dir(dir).args(["ec", "-in", key, "-outform", "DER"]).output()?.stdout;
    let at = der.windows(5).position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20]).context("not a SEC1 P-256 key")? + 5;
    Ok(der.get(at..at + 32).context("truncated SEC1 key")?.try_into()?)
}

/// An ECDSA-Sig-Value (DER) as r || s, 32 bytes each.
fn raw_signature(der: &[u8]) -> Result<[u8; 64]> {
    let int = |b: &[u8]| -> Result<(Vec<u8>, usize)> {
        if b.len() < 2 || b[0] != 0x02 || b.len() < 2 + usize::from(b[1]) {
            bail!("not a DER INTEGER");
        }
        let n = usize::from(b[1]);
        Ok((b[2..2 + n].to_vec(), 2 + n))
    };
    if der.len() < 2 || der[0] != 0x30 {
        bail!("not an ECDSA signature");
    }
    let (r, used) = int(&der[2..])?;
    let (s, _) = int(&der[2 + used..])?;
    let mut out = [0u8; 64];
    for (i, v) in [r, s].iter().enumerate() {
        let v: Vec<u8> = v.iter().copied().skip_while(|b| *b == 0).collect();
        if v.len() > 32 {
            bail!("an ECDSA integer above 32 bytes");
        }
        out[i * 32 + 32 - v.len()..i * 32 + 32].copy_from_slice(&v);
    }
    Ok(out)
}

/// Seconds since the epoch as RFC 3339 UTC (what Intel's collateral uses).
fn rfc3339(t: u64) -> String {
    let (days, secs) = (t / 86_400, t % 86_400);
    // Civil from days (proleptic Gregorian).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// The test PKI and collateral.
struct TestPki {
    root_pem: PathBuf,
    qe_keys: PathBuf,
    collateral: PathBuf,
}

/// QE MRSIGNER the model reports and the QE identity names.
const QE_MRSIGNER: [u8; 32] = [0xDC; 32];
const FMSPC: [u8; 6] = [0x00, 0xA0, 0x6F, 0x00, 0x00, 0x00];
const SGX_COMPONENTS: [u8; 16] = [3, 3, 2, 2, 4, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0];

fn test_pki(dir: &Path) -> Result<TestPki> {
    std::fs::create_dir_all(dir)?;
    // Intel's profile (the verifier checks it): root (path length 1) -> "Intel SGX PCK Platform
    // CA" (path length 0) -> "Intel SGX PCK Certificate" (no CA, the SGX extensions); the root
    // -> "Intel SGX TCB Signing" (no CA), which signs the collateral; the root CA CRL and the PCK
    // CRL.
    std::fs::write(
        dir.join("platform.ext"),
        "basicConstraints=critical,CA:true,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n",
    )?;
    std::fs::write(dir.join("tcb.ext"), "basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\n")?;
    let ext = sgx_extensions(SGX_COMPONENTS, 11, FMSPC);
    std::fs::write(
        dir.join("pck.ext"),
        format!(
            "basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\n1.2.840.113741.1.13.1=DER:{}\n",
            hex::encode(&ext)
        ),
    )?;
    for name in ["root", "platform", "pck", "tcb", "att"] {
        openssl(dir, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &format!("{name}.key")])?;
    }
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "root.key",
            "-subj",
            "/CN=Test SGX Root CA",
            "-days",
            "3650",
            "-addext",
            "basicConstraints=critical,CA:true,pathlen:1",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            "root.pem",
        ],
    )?;
    for (name, cn, extfile, ca) in [
        ("platform", "Intel SGX PCK Platform CA", "platform.ext", "root"),
        ("pck", "Intel SGX PCK Certificate", "pck.ext", "platform"),
        ("tcb", "Intel SGX TCB Signing", "tcb.ext", "root"),
    ] {
        openssl(dir, &["req", "-new", "-key", &format!("{name}.key"), "-subj", &format!("/CN={cn}"), "-out", "x.csr"])?;
        let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "x.csr",
                "-CA",
                &ca_pem,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-days",
                "3650",
                "-sha256",
                "-extfile",
                extfile,
                "-out",
                &format!("{name}.pem"),
            ],
        )?;
    }
    let sha256 = ["-md", "sha256"];
    let root_crl = crate::snp_test::openssl_crl(dir, "root", "root.pem", "root.key", &sha256)?;
    let pck_crl = crate::snp_test::openssl_crl(dir, "platform", "platform.pem", "platform.key", &sha256)?;
    let read = |n: &str| std::fs::read_to_string(dir.join(n));
    let (root, platform, pck, tcb) = (read("root.pem")?, read("platform.pem")?, read("pck.pem")?, read("tcb.pem")?);
    let qe_keys = dir.join("qe-keys.txt");
    std::fs::write(
        &qe_keys,
        format!(
            "att {}\npck {}\nmrsigner {}\nisvsvn 4\n{pck}{platform}{root}",
            hex::encode(p256_scalar(dir, "att.key")?),
            hex::encode(p256_scalar(dir, "pck.key")?),
            hex::encode(QE_MRSIGNER)
        ),
    )?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let (issued, next) = (rfc3339(now - 3600), rfc3339(now + 30 * 86_400));
    let comps = |svns: &[u8]| svns.iter().map(|s| serde_json::json!({"svn": s})).collect::<Vec<_>>();
    let tcb_info = serde_json::json!({
        "id": "TDX", "version": 3, "issueDate": issued, "nextUpdate": next,
        "fmspc": hex::encode_upper(FMSPC), "pceId": "0000", "tcbType": 0, "tcbEvaluationDataNumber": 17,
        "tdxModule": {"mrsigner": "00".repeat(48), "attributes": "0000000000000000", "attributesMask": "FFFFFFFFFFFFFFFF"},
        "tdxModuleIdentities": [],
        "tcbLevels": [
            {"tcb": {"sgxtcbcomponents": comps(&SGX_COMPONENTS), "pcesvn": 11, "tdxtcbcomponents": comps(&[0; 16])},
             "tcbDate": issued, "tcbStatus": "UpToDate"},
        ],
    })
    .to_string();
    let qe_identity = serde_json::json!({
        "id": "TD_QE", "version": 2, "issueDate": issued, "nextUpdate": next, "tcbEvaluationDataNumber": 17,
        "miscselect": "00000000", "miscselectMask": "FFFFFFFF",
        "attributes": "11000000000000000000000000000000", "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
        "mrsigner": hex::encode_upper(QE_MRSIGNER), "isvprodid": 2,
        "tcbLevels": [{"tcb": {"isvsvn": 4}, "tcbDate": issued, "tcbStatus": "UpToDate"}],
    })
    .to_string();
    let sign = |json: &str, name: &str| -> Result<String> {
        std::fs::write(dir.join(name), json)?;
        let der = Command::new("openssl")
            .current_dir(dir)
            .args(["dgst", "-sha256", "-sign", "tcb.key", name])
            .output()
            .context("openssl dgst")?
            .stdout;
        Ok(hex::encode(raw_signature(&der)?))
    };
    let collateral = dir.join("collateral.json");
    let doc = serde_json::json!({
        "tcb_info_issuer_chain": format!("{tcb}{root}"),
        "tcb_info": tcb_info,
        "tcb_info_signature": sign(&tcb_info, "tcb_info.json")?,
        "qe_identity_issuer_chain": format!("{tcb}{root}"),
        "qe_identity": qe_identity,
        "qe_identity_signature": sign(&qe_identity, "qe_identity.json")?,
        "pck_crl": hex::encode(pck_crl),
        "root_ca_crl": hex::encode(root_crl),
    });
    std::fs::write(&collateral, serde_json::to_string_pretty(&doc)?)?;
    Ok(TestPki { root_pem: dir.join("root.pem"), qe_keys, collateral })
}

/// `veil kbs serve` for TDX evidence with the test root.
fn start_broker(veil: &Path, secret: &Path, reference: &Path, pki: &TestPki, log: &Path) -> Result<Broker> {
    let tee = [
        "--tdx-reference".as_ref(),
        reference.as_os_str(),
        "--tdx-collateral".as_ref(),
        pki.collateral.as_os_str(),
        "--tdx-test-root".as_ref(),
        pki.root_pem.as_os_str(),
    ];
    crate::snp_test::start_broker(veil, secret, &tee, log)
}

/// Boot the TDX model ROM from `image` with the model's fw_cfg files and a relay to `broker`.
fn boot(
    veil: &Path,
    rom: &Path,
    name: &str,
    image: &Path,
    fw_cfg: &[(&str, &Path)],
    broker: &Broker,
) -> Result<qemu::Run> {
    crate::snp_test::boot_disk(veil, rom, name, image, fw_cfg, Some(broker))
}

/// What the attestation tests and the benchmark share: the demo disk, the test PKI and
/// collateral, the reference values (`veil measure --platform tdx --image`), MRCONFIGID from the
/// image's init-data, a TD HOB, and the broker.
pub struct Setup {
    veil: PathBuf,
    dir: PathBuf,
    secret: PathBuf,
    image: PathBuf,
    pki: TestPki,
    reference: PathBuf,
    mrconfigid: PathBuf,
    hob: PathBuf,
    broker_log: PathBuf,
    /// `veil kbs serve` with this image's reference values and the test PKI.
    pub broker: Broker,
    id: Vec<u8>,
}

impl Setup {
    fn new(model_rom: &Path, name: &str) -> Result<Setup> {
        let crate::DemoDisk { veil, dir, secret, image } = crate::fresh_demo_disk(name)?;
        Setup::for_image(model_rom, veil, dir, secret, image, 512 << 20)
    }

    /// The same for `image`, made by `veil image build` with `secret`, in a TD of `ram` bytes
    /// (the TD HOB's); files go to `dir`.
    pub fn for_image(
        model_rom: &Path,
        veil: PathBuf,
        dir: PathBuf,
        secret: PathBuf,
        image: PathBuf,
        ram: u64,
    ) -> Result<Setup> {
        let pki = test_pki(&dir.join("pki"))?;
        let reference = dir.join("tdx-reference.json");
        crate::run(
            Command::new(&veil)
                .args(["measure", "--platform", "tdx", "--rom"])
                .arg(model_rom)
                .arg("--image")
                .arg(&image)
                .arg("--out")
                .arg(&reference),
        )?;
        // MRCONFIGID: the digest of the init-data veil image build wrote beside the image
        // (sha256), zero-padded to 48 bytes, computed here from the file.
        let init_data = std::fs::read(image.with_extension("init-data.toml")).context("the image's init-data")?;
        if !String::from_utf8_lossy(&init_data).contains("algorithm = \"sha256\"") {
            bail!("the init-data does not name sha256");
        }
        let mut id = <sha2::Sha256 as sha2::Digest>::digest(&init_data).to_vec();
        id.resize(48, 0);
        let mrconfigid = dir.join("mrconfigid.bin");
        std::fs::write(&mrconfigid, &id)?;
        let hob = dir.join("td-hob.bin");
        std::fs::write(&hob, crate::tdx_test::td_hob(ram))?;
        let broker_log = dir.join("broker.log");
        let broker = start_broker(&veil, &secret, &reference, &pki, &broker_log)?;
        Ok(Setup { veil, dir, secret, image, pki, reference, mrconfigid, hob, broker_log, broker, id })
    }

    /// The model's files of an honest launch.
    pub fn honest(&self) -> Vec<(&'static str, &Path)> {
        vec![
            ("opt/veil/test-td-hob", &self.hob),
            ("opt/veil/test-tdx-qe", &self.pki.qe_keys),
            ("opt/veil/test-tdx-mrconfigid", &self.mrconfigid),
        ]
    }
}

/// The test (see the module documentation).
pub fn attestation_tests(model_rom: &Path) -> Result<()> {
    let setup = Setup::new(model_rom, "tdx-attest")?;
    let Setup { veil, dir, secret, image, pki, reference, broker_log, broker, id, .. } = &setup;
    let honest = setup.honest();

    eprintln!(
        "xtask: tdx test: first boot: a quote and the CC event log to the broker, secret released; root filesystem"
    );
    // No key but the handed-over root key left in guest memory after Linux ran (issue 34).
    let mut keys = crate::key_material(veil, secret, image)?;
    keys.retain(|(name, _)| name != "veil-root disk key");
    let first =
        crate::snp_test::boot_disk_scanned(veil, model_rom, "tdx-attest-first", image, &honest, Some(broker), &keys)?;
    first
        .expect("tdx: MRCONFIGID ")?
        .expect("is the digest of this disk's init-data (boot target bound)")?
        .expect("tdx: TD quote of ")?
        .expect("kbs: the broker verified the tdx evidence and released the master secret")?
        .expect(&format!("{} clusterID=", crate::demo_image::ROOT_MARKER))?;
    // No key in the clear: not in the serial log, not on the disk (nothing is sealed on TDX).
    let keys = crate::key_material(veil, secret, image)?;
    crate::scan_for_keys("the TDX serial log", first.log.as_bytes(), &keys)?;
    crate::scan_for_keys("the TDX disk image", &std::fs::read(image)?, &keys)?;
    let log = std::fs::read_to_string(broker_log)?;
    for want in [
        "TD quote verified: quote v4 signed by a PCK chain to a TEST root",
        "TCB status UpToDate",
        "replays to the quoted RTMR0-3",
        "RTMR1 is the reference value; RTMR2 is the reference value",
        "MRCONFIGID is the init-data's digest",
    ] {
        if !log.contains(want) {
            bail!("the broker's log does not say `{want}`:\n{log}");
        }
    }

    eprintln!("xtask: tdx test: refusals (each on the serial log and the broker's log)");
    let mut other_id = id.clone();
    other_id[0] ^= 0xFF;
    let other_mrconfigid = dir.join("other-mrconfigid.bin");
    std::fs::write(&other_mrconfigid, &other_id)?;
    let hostile = |how: &str| -> Result<PathBuf> {
        let p = dir.join(format!("hostile-{how}"));
        std::fs::write(&p, how)?;
        Ok(p)
    };
    let (mrtd, rtmr, debug) = (hostile("mrtd")?, hostile("rtmr")?, hostile("debug")?);
    // (name, fw_cfg files, the reason, whether the broker sees it)
    let cases: Vec<(&str, Vec<(&str, &Path)>, &str, bool)> = vec![
        (
            "mrtd",
            [honest.clone(), vec![("opt/veil/test-tdx-hostile", &mrtd)]].concat(),
            "is not among the reference values",
            true,
        ),
        (
            "eventlog",
            [honest.clone(), vec![("opt/veil/test-tdx-hostile", &rtmr)]].concat(),
            "the log is not this TD's",
            true,
        ),
        ("debug", [honest.clone(), vec![("opt/veil/test-tdx-hostile", &debug)]].concat(), "a debug TD", true),
        (
            "mrconfigid",
            vec![honest[0], honest[1], ("opt/veil/test-tdx-mrconfigid", &other_mrconfigid)],
            "launch binding: MRCONFIGID ",
            false,
        ),
    ];
    for (name, files, why, broker_sees) in cases {
        let from = crate::snp_test::log_mark(broker_log)?;
        let r = boot(veil, model_rom, &format!("tdx-refused-{name}"), image, &files, broker)?;
        r.expect(why)?.expect_exit(qemu::EXIT_FAILURE)?;
        if r.log.contains(crate::demo_image::ROOT_MARKER) {
            bail!("the {name} case reached the root filesystem");
        }
        crate::snp_test::broker_refusal(broker_log, from, why, broker_sees)
            .with_context(|| format!("the {name} case"))?;
    }

    // Issue 35, case 2: a disk whose init-data was deleted from the clear header is refused
    // before any quote is made or the broker asked (before, the firmware said "not bound" and
    // asked the broker without init-data).
    eprintln!("xtask: tdx test: a disk without init-data: refused before any quote");
    let copy = dir.join("tdx-no-init-data.img");
    std::fs::copy(image, &copy)?;
    crate::tpm_test::edit_boot_tokens(&copy, |tokens| {
        crate::tpm_test::bundle_token(tokens).as_object_mut().expect("an object").remove("init_data");
    })?;
    let r = boot(veil, model_rom, "tdx-no-init-data", &copy, &honest, broker)?;
    r.expect_exit(qemu::EXIT_FAILURE)?
        .expect("veil-boot is not bound to a boot target: its veil-bundle token carries no init-data")?;
    for never in ["tdx: TD quote of", "kbs: asking", crate::demo_image::ROOT_MARKER] {
        if r.log.contains(never) {
            bail!("a disk without init-data: the log shows `{never}`:\n{}", r.log);
        }
    }
    let _ = std::fs::remove_file(&copy);

    eprintln!("xtask: tdx test: RTMRs that are not the operator's reference values are refused");
    let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(reference)?)?;
    doc["rtmr2"] = serde_json::json!("00".repeat(48));
    let other_reference = dir.join("tdx-reference-other.json");
    std::fs::write(&other_reference, doc.to_string())?;
    let other_log = dir.join("broker-other.log");
    let other = start_broker(veil, secret, &other_reference, pki, &other_log)?;
    let r = boot(veil, model_rom, "tdx-refused-rtmr", image, &honest, &other)?;
    r.expect("is not the reference 000000")?.expect_exit(qemu::EXIT_FAILURE)?;
    crate::snp_test::broker_refusal(&other_log, 0, "RTMR2 ", true)?;
    Ok(())
}

/// `cargo xtask bench tdx`: the TDX attestation phases of the firmware under TCG against the
/// model TDX module and quoting side, min / median over `runs` boots (on TDX every boot asks the
/// broker: there is no sealing key).
pub fn bench(model_rom: &Path, runs: usize) -> Result<String> {
    let setup = Setup::new(model_rom, "tdx-bench")?;
    let honest = setup.honest();
    let mut boots: Vec<Vec<(String, f64)>> = Vec::new();
    for _ in 0..runs {
        let r = boot(&setup.veil, model_rom, "tdx-bench", &setup.image, &honest, &setup.broker)?;
        r.expect(crate::demo_image::ROOT_MARKER)?;
        boots.push(crate::snp_test::stage_ms(&r.log));
    }
    let stat = |stage: &str| -> Option<(f64, f64)> {
        let mut v: Vec<f64> =
            boots.iter().filter_map(|r| r.iter().find(|(s, _)| s == stage).map(|(_, ms)| *ms)).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some((v[0], v[v.len() / 2]))
    };
    let mut out = format!(
        "## TDX attestation phases (model TDX module and quoting side)\n\nCommand: `cargo xtask bench tdx`. The demo disk booted by the TDX model ROM under TCG (q35, 2 vCPUs, 512 MiB),\nTDCALLs answered by the model TDX module in the ROM's #UD handler and GetQuote by the model quoting side\n(ECDSA P-256 signatures in TCG-emulated code): **measured against the model**, so a real TDX module's,\nquoting enclave's and QGS's latency is not in these numbers. Min / median of {runs} boots (each asks the broker).\n\n| phase (firmware, TCG) | what | min ms | median ms |\n|---|---|---:|---:|\n"
    );
    let rows: [(&str, &str); 6] = [
        ("measure-firmware", "TD HOB and fw_cfg inputs into RTMR0 (TDG.MR.RTMR.EXTEND), CC event log"),
        ("measure-target", "boot target and separators into RTMR1/RTMR2"),
        (
            "kbs-auth",
            "POST /kbs/v0/auth through virtio-console (VMCALL MMIO, shared bounce pool), `veil kbs relay`, HTTP",
        ),
        ("kbs-report", "ephemeral P-256 key, TDG.MR.REPORT, GetQuote (a quote of ~3 KiB), Trustee tdx evidence JSON"),
        (
            "kbs-attest",
            "POST /kbs/v0/attest: the broker's DCAP verdict, CCEL replay, reference values, MRCONFIGID, report data",
        ),
        ("kbs-resource", "GET /kbs/v0/resource: JWE made by the broker, decrypted in the firmware"),
    ];
    for (stage, what) in rows {
        if let Some((min, med)) = stat(stage) {
            out.push_str(&format!("| `{stage}` | {what} | {min:.1} | {med:.1} |\n"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_750_328_163), "2025-06-19T10:16:03Z");
        assert_eq!(rfc3339(1_709_251_199), "2024-02-29T23:59:59Z");
    }

    #[test]
    fn der_signatures_become_r_and_s() {
        let der = [0x30, 0x08, 0x02, 0x02, 0x00, 0x81, 0x02, 0x02, 0x01, 0x02];
        let raw = raw_signature(&der).unwrap();
        assert_eq!((raw[31], raw[62], raw[63]), (0x81, 0x01, 0x02));
    }
}
