//! The SEV-SNP model ROM under TCG: the firmware's real SNP path (GHCB, page-state changes,
//! PVALIDATE, CPUID page, SEV hash table, CC blob, VMPCK0 wipe) boots the Debian test kernel to
//! its initramfs with a model of the AMD-SP and the hypervisor answering the SNP instructions
//! (kernel/src/model/snp.rs), and refuses a tampered initrd. The SEV hash table comes from
//! sev-snp-measure's own code (`SevHashes`), not from ours.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::{linux, qemu};

/// The model ROM's marker string (kernel/src/model/snp.rs MARKER).
pub const MODEL_MARKER: &str = "veilboot SNP model ROM";
const APPEND: &str = "console=ttyS0 earlyprintk=serial,ttyS0 panic=-1 quiet";
/// The model AMD-SP's default TCB_VERSION (agent::snp::psp: microcode 0xDB, SNP 0x18,
/// bootloader 3), which the test chain's VCEK certifies.
const MODEL_TCB: u64 = 0xDB18_0000_0000_0003;
/// The TCB after the firmware update of the rollback test: SNP 0x19.
const UPDATED_TCB: u64 = 0xDB19_0000_0000_0003;

/// The SEV hash table of (kernel, initrd, append) as sev-snp-measure builds it.
fn sev_hashes(python: &Path, kernel: &Path, initrd: &Path, out: &Path) -> Result<()> {
    let script = "import sys\nfrom sevsnpmeasure.sev_hashes import SevHashes\n\
                  sys.stdout.buffer.write(SevHashes(sys.argv[1], sys.argv[2], sys.argv[3]).construct_table())";
    let o = Command::new(python)
        .args(["-c", script])
        .arg(kernel)
        .arg(initrd)
        .arg(APPEND)
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !o.status.success() {
        bail!("sev-snp-measure's SevHashes: {}", String::from_utf8_lossy(&o.stderr));
    }
    std::fs::write(out, &o.stdout)?;
    Ok(())
}

fn args(kernel: &Path, initrd: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = vec![
        "-kernel".to_string(),
        kernel.display().to_string(),
        "-initrd".into(),
        initrd.display().to_string(),
        "-append".into(),
        APPEND.into(),
        "-m".into(),
        "512M".into(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// QEMU without SEV rewrites header fields of the -kernel setup part in fw_cfg (loader type,
/// heap end, command line and initrd addresses); under SEV it does not. A kernel whose file
/// already holds QEMU's values is served unchanged, so the table sev-snp-measure computes from
/// the file is the one the firmware must find. The values come from the setup part as fw_cfg
/// serves it (the test ROM's `kernel-setup` dump); they depend only on the memory size, the
/// initrd's size and the command line, which the boots below keep.
pub fn kernel_as_fw_cfg_serves_it(
    model_rom: &Path,
    kernel: &Path,
    initrd: &Path,
    dir: &Path,
    ram: &str,
) -> Result<PathBuf> {
    let mut a = args(kernel, initrd, &["-fw_cfg", "name=opt/veil/test,string=kernel-setup"]);
    let m = a.iter().position(|x| x == "-m").expect("args sets -m");
    a[m + 1] = ram.to_string();
    let run = qemu::boot(model_rom, "snp-kernel-setup", &a, Duration::from_secs(60))?;
    let hex = run
        .log
        .lines()
        .find_map(|l| l.split_once("test: kernel setup ").map(|(_, h)| h.trim().to_string()))
        .context("the kernel-setup dump is missing from the log")?;
    let setup = hex::decode(hex).context("the kernel-setup dump is not hex")?;
    let mut bytes = std::fs::read(kernel)?;
    if setup.len() > bytes.len() {
        bail!("the setup part ({} bytes) is larger than the kernel", setup.len());
    }
    bytes[..setup.len()].copy_from_slice(&setup);
    let out = dir.join(format!("vmlinuz-as-served-{ram}"));
    std::fs::write(&out, bytes)?;
    Ok(out)
}

/// QEMU arguments (all but `-m`) for a measured direct boot of the Debian test kernel and
/// initramfs on the model ROM in a VM of `mib` MiB: the kernel as fw_cfg serves it at that size
/// and sev-snp-measure's SEV hash table of it, both written to `dir`.
pub fn direct_boot_args(model_rom: &Path, python: &Path, dir: &Path, mib: u64) -> Result<Vec<String>> {
    let l = linux::prepare()?;
    let kernel = kernel_as_fw_cfg_serves_it(model_rom, &l.kernel, &l.initrd, dir, &format!("{mib}M"))?;
    let table = dir.join(format!("snp-hashes-{mib}M.bin"));
    sev_hashes(python, &kernel, &l.initrd, &table)?;
    let mut a = args(&kernel, &l.initrd, &["-fw_cfg"]);
    a.push(format!("name=opt/veil/test-snp-hashes,file={}", table.display()));
    let m = a.iter().position(|x| x == "-m").expect("args sets -m");
    a.drain(m..m + 2);
    Ok(a)
}

/// Guests whose RAM lies mostly above 4 GiB (q35 puts all RAM beyond 2 GiB there once the
/// guest has 2.75 GiB): 6 GiB and 16 GiB boot Linux, every page of its map private and validated
/// in the model's RMP (QEMU allocates guest RAM lazily, so 16 GiB costs what Linux touches).
pub fn large_guest_tests(model_rom: &Path, python: &Path) -> Result<()> {
    let dir = qemu::run_dir("snp-large-guests")?;
    std::fs::create_dir_all(&dir)?;
    for gib in [6u64, 16] {
        eprintln!("xtask: snp test: a {gib} GiB guest ({} GiB above 4 GiB) boots Linux", gib - 2);
        let mut a = direct_boot_args(model_rom, python, &dir, gib << 10)?;
        a.extend(["-m".to_string(), format!("{gib}G")]);
        let run = qemu::boot(model_rom, &format!("snp-linux-{gib}g"), &a, Duration::from_secs(240))?;
        run.expect("snp: validated the remaining")?
            .expect(&format!("{MODEL_MARKER}: the "))?
            .expect("MiB Linux is given as RAM are all private and validated")?
            .expect("Linux version")?
            .expect(linux::MARKER)?;
        // Linux's RAM in the audit line: all but the legacy hole, the SNP pages and the
        // firmware's reservations, so within 64 MiB of the guest's size.
        let mib: u64 = run
            .log
            .lines()
            .find_map(|l| {
                l.split_once(&format!("{MODEL_MARKER}: the ")).and_then(|(_, r)| r.split(' ').next()?.parse().ok())
            })
            .unwrap_or(0);
        if mib + 64 < gib << 10 || mib > gib << 10 {
            bail!("the {gib} GiB guest's Linux was given {mib} MiB of RAM");
        }
    }
    Ok(())
}

/// The CC blob setup_data node as Linux reads it (arch/x86/include/asm/sev.h
/// `cc_blob_sev_info` in a `setup_data` of type SETUP_CC_BLOB = 7): written out here from the
/// layout, not with the firmware's code.
fn cc_blob_hex() -> String {
    let mut node = Vec::new();
    node.extend(0u64.to_le_bytes()); // next
    node.extend(7u32.to_le_bytes()); // type
    node.extend(40u32.to_le_bytes()); // len
    node.extend(b"AMDE"); // magic 0x45444d41
    node.extend(1u16.to_le_bytes()); // version
    node.extend(0u16.to_le_bytes()); // reserved
    node.extend(0x90_0000u64.to_le_bytes()); // secrets_phys
    node.extend(4096u32.to_le_bytes()); // secrets_len
    node.extend(0u32.to_le_bytes()); // rsvd1
    node.extend(0x90_1000u64.to_le_bytes()); // cpuid_phys
    node.extend(4096u32.to_le_bytes()); // cpuid_len
    node.extend(0u32.to_le_bytes()); // rsvd2
    hex::encode(node)
}

/// Once `log` shows Linux powered off, save guest RAM (512 MiB) to `dump` through the QEMU
/// monitor at `monitor` and quit QEMU.
fn save_memory_after_power_off(monitor: PathBuf, log: PathBuf, dump: PathBuf) -> std::thread::JoinHandle<Result<()>> {
    std::thread::spawn(move || -> Result<()> {
        use std::io::{Read, Write};
        let start = std::time::Instant::now();
        while !std::fs::read_to_string(&log).unwrap_or_default().contains("reboot: Power down") {
            // The disk boots take up to 300 s under TCG (boot_disk's limit).
            let limit = qemu::scaled(Duration::from_secs(300))?;
            if start.elapsed() > limit {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                bail!("Linux did not power off (log {}): {}", log.display(), qemu::timed_out(limit, &text));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut m = std::os::unix::net::UnixStream::connect(&monitor)?;
        m.set_read_timeout(Some(qemu::scaled(Duration::from_secs(60))?))?;
        qemu::pmemsave(&mut m, 0x2000_0000, &dump)?;
        let mut buf = [0u8; 4096];
        writeln!(m, "quit")?;
        // Keep the connection open until QEMU closes it: a monitor whose client hangs up at
        // once may drop the command unread.
        while m.read(&mut buf).is_ok_and(|n| n > 0) {}
        Ok(())
    })
}

/// Boot the model ROM: accepted with the right table, refused with a tampered initrd.
pub fn model_boot_tests(model_rom: &Path, python: &Path) -> Result<()> {
    let t = Duration::from_secs(120);
    let l = linux::prepare()?;
    let dir = qemu::run_dir("snp-boot")?;
    let kernel = kernel_as_fw_cfg_serves_it(model_rom, &l.kernel, &l.initrd, &dir, "512M")?;
    let table = dir.join("snp-hashes.bin");
    sev_hashes(python, &kernel, &l.initrd, &table)?;
    let hashes = format!("name=opt/veil/test-snp-hashes,file={}", table.display());

    eprintln!("xtask: snp test: the model ROM boots Linux as an SEV-SNP guest with kernel hashes");
    // QEMU stays up when Linux powers off (-no-shutdown), so the guest's memory can be saved
    // and searched for VMPCK0 before QEMU is told to quit.
    let monitor = dir.join("snp-linux.monitor");
    let dump = dir.join("snp-linux.mem");
    let _ = std::fs::remove_file(&dump);
    let monitor_arg = format!("unix:{},server=on,wait=off", monitor.display());
    let _ = std::fs::remove_file(qemu::log_path("snp-linux")?); // the thread must not read an old one
    let saver = save_memory_after_power_off(monitor.clone(), qemu::log_path("snp-linux")?, dump.clone());
    let booted = qemu::boot(
        model_rom,
        "snp-linux",
        &args(&kernel, &l.initrd, &["-fw_cfg", &hashes, "-no-shutdown", "-monitor", &monitor_arg]),
        t,
    )?;
    saver.join().map_err(|_| anyhow::anyhow!("the memory-saving thread panicked"))??;
    booted
        .expect("on the sev-snp platform")?
        .expect("fw_cfg: ")?
        .expect("mtrr: left as they are on sev-snp")?
        .expect("snp: validated the remaining")?
        .expect("snp: kernel, initrd and command line match the SEV hash table (measured direct boot)")?
        .expect(&format!("snp: CC blob for Linux (setup_data type 7): {}", cc_blob_hex()))?
        .expect("the CC blob is withheld: Linux under TCG is no SNP guest")?
        .expect("snp: VMPCK0 wiped from the secrets page")?
        // The fw_cfg DMA buffer is the host's until then; Linux must get it back as RAM, and
        // the model checks Linux's whole memory map against its RMP.
        .expect("snp: the 2 MiB shared for DMA made private and validated again for Linux")?
        .expect(&format!("{MODEL_MARKER}: the "))?
        .expect("MiB Linux is given as RAM are all private and validated")?
        .expect("stage=handoff")?
        .expect("Linux version")?
        .expect(linux::MARKER)?
        .expect("\"platform\":\"sev-snp\"")?;
    if booted.code != Some(0) {
        bail!(
            "QEMU exited with {:?} after the kernel powered off (expected 0); log {}",
            booted.code,
            booted.log_path.display()
        );
    }

    let memory = std::fs::read(&dump)?;
    // The model's test VMPCKs (kernel/src/model/snp.rs test_vmpck), computed here on their own.
    let vmpck = |n: u8| -> Vec<u8> {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"veilboot SNP model VMPCK");
        h.update([n]);
        h.finalize().to_vec()
    };
    if memchr::memmem::find(&memory, &vmpck(0)).is_some() {
        bail!("VMPCK0 of the modelled secrets page is still in guest memory after the hand-off");
    }
    if memchr::memmem::find(&memory, &vmpck(1)).is_none() {
        bail!("VMPCK1 is not in the memory dump either: the dump cannot show that VMPCK0 is gone");
    }
    let _ = std::fs::remove_file(&dump);

    eprintln!("xtask: snp test: a tampered initrd and a missing hash table are refused");
    let mut tampered = std::fs::read(&l.initrd)?;
    let n = tampered.len();
    tampered[n / 2] ^= 1;
    let tampered_path = dir.join("snp-initrd-tampered.cpio");
    std::fs::write(&tampered_path, tampered)?;
    let refused = qemu::boot(model_rom, "snp-tampered", &args(&kernel, &tampered_path, &["-fw_cfg", &hashes]), t)?;
    refused
        .expect("FATAL: the initrd does not match its SHA-256 in the SEV hash table (kernel-hashes): refusing it")?
        .expect_exit(qemu::EXIT_FAILURE)?;
    if refused.log.contains("Linux version") {
        bail!("the firmware started a kernel whose initrd does not match the hash table");
    }
    let no_table = qemu::boot(model_rom, "snp-no-table", &args(&kernel, &l.initrd, &[]), t)?;
    no_table
        .expect("FATAL: SEV hash table: no table header GUID (QEMU was not started with kernel-hashes=on)")?
        .expect_exit(qemu::EXIT_FAILURE)?;

    eprintln!("xtask: snp test: virtio through the GHCB and a shared bounce pool (relay echo)");
    let relay = crate::relay_echo_run(model_rom, "snp-relay-echo", &dir, &[], t)?;
    relay
        .expect("on the sev-snp platform")?
        .expect("snp: 4 MiB at ")?
        .expect("made shared for virtio DMA (rescinded, converted, C-bit cleared, zeroed)")?
        .expect("virtio-console at 00:")?;

    eprintln!("xtask: snp test: a hostile hypervisor is refused");
    for (how, want) in [
        ("cbit", "the guest asked the hypervisor to terminate it: reason set 7, code 3"),
        ("register", "the guest asked the hypervisor to terminate it: reason set 7, code 4"),
        ("inject", "the guest asked the hypervisor to terminate it: reason set 7, code 4"),
        ("double-validation", "changed nothing: the page was already validated"),
    ] {
        let hostile = ["-fw_cfg".to_string(), format!("name=opt/veil/test-snp-hostile,string={how}")];
        let extra: Vec<&str> = hostile.iter().map(String::as_str).collect();
        let run = qemu::boot(model_rom, &format!("snp-hostile-{how}"), &args(&kernel, &l.initrd, &extra), t)?;
        run.expect(want)?.expect_exit(qemu::EXIT_FAILURE)?;
        if run.log.contains("Linux version") {
            bail!("the firmware booted Linux under a hostile hypervisor ({how})");
        }
    }
    Ok(())
}

/// A test AMD chain made with OpenSSL (ARK and ASK RSA with RSASSA-PSS SHA-384 signatures as
/// AMD's, a P-384 VCEK with the KDS extensions for the model's TCB and CHIP_ID), and a second
/// VCEK key no certificate names ("another chip").
struct TestChain {
    ark_pem: PathBuf,
    /// The ARK's CRL (DER).
    crl: PathBuf,
    /// The host's certificate table (VCEK, ASK, ARK).
    table: PathBuf,
    /// The VCEK's private scalar (48 bytes), and another chip's.
    vcek_scalar: PathBuf,
    other_scalar: PathBuf,
}

pub fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    crate::run(Command::new("openssl").current_dir(dir).args(args).stdout(std::process::Stdio::null()))
}

/// An empty CRL (DER) issued by the CA `cert`/`key` in `dir`, valid 30 days, signed with `sig`
/// (`-md ...` and `-sigopt ...` arguments), made with `openssl ca -gencrl`.
pub fn openssl_crl(dir: &Path, name: &str, cert: &str, key: &str, sig: &[&str]) -> Result<Vec<u8>> {
    let db = format!("{name}.index");
    std::fs::write(dir.join(&db), "")?;
    std::fs::write(dir.join(format!("{name}.crlnumber")), "01\n")?;
    std::fs::write(
        dir.join(format!("{name}.cnf")),
        format!("[ca]\ndefault_ca = d\n[d]\ndatabase = {db}\ncrlnumber = {name}.crlnumber\ndefault_crl_days = 30\n"),
    )?;
    let (cnf, pem) = (format!("{name}.cnf"), format!("{name}.crl.pem"));
    let mut a = vec!["ca", "-gencrl", "-config", &cnf, "-cert", cert, "-keyfile", key, "-out", &pem];
    a.extend(sig);
    openssl(dir, &a)?;
    let der = format!("{name}.crl.der");
    openssl(dir, &["crl", "-in", &pem, "-outform", "DER", "-out", &der])?;
    Ok(std::fs::read(dir.join(der))?)
}

/// The P-384 private scalar of a SEC1 DER key (`30 .. 02 01 01 04 30 <48 bytes>`).
fn ec_scalar(dir: &Path, key: &str, out: &Path) -> Result<()> {
    let der = Command::new("openssl").current_dir(dir).args(["ec", "-in", key, "-outform", "DER"]).output()?.stdout;
    let at = der.windows(5).position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x30]).context("not a SEC1 P-384 key")? + 5;
    std::fs::write(out, der.get(at..at + 48).context("truncated SEC1 key")?)?;
    Ok(())
}

fn test_chain(dir: &Path) -> Result<TestChain> {
    std::fs::create_dir_all(dir)?;
    let pss = ["-sha384", "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:48"];
    // AMD's profile: the ASK is a CA of path length 0 that may sign certificates; the ARK signs
    // certificates and CRLs.
    std::fs::write(dir.join("ca.ext"), "basicConstraints=critical,CA:true,pathlen:0\nkeyUsage=critical,keyCertSign\n")?;
    // The model AMD-SP's TCB (0xDB18000000000003: bootloader 3, TEE 0, SNP 0x18, microcode
    // 0xDB) and CHIP_ID (0x5C bytes).
    std::fs::write(
        dir.join("vcek.ext"),
        format!(
            "1.3.6.1.4.1.3704.1.3.1=DER:02:01:03\n1.3.6.1.4.1.3704.1.3.2=DER:02:01:00\n\
             1.3.6.1.4.1.3704.1.3.3=DER:02:01:18\n1.3.6.1.4.1.3704.1.3.8=DER:02:02:00:DB\n\
             1.3.6.1.4.1.3704.1.4=DER:{}\n",
            ["5C"; 64].join(":")
        ),
    )?;
    for name in ["ark", "ask"] {
        openssl(
            dir,
            &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", &format!("{name}.key")],
        )?;
    }
    let mut a =
        vec!["req", "-x509", "-new", "-key", "ark.key", "-subj", "/CN=ARK-Test", "-days", "3650", "-out", "ark.pem"];
    a.extend(["-addext", "basicConstraints=critical,CA:true", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    a.extend(pss);
    openssl(dir, &a)?;
    // The ASK under AMD's name for Milan (the verifier checks the ASK's name).
    openssl(dir, &["req", "-new", "-key", "ask.key", "-subj", "/CN=SEV-Milan", "-out", "ask.csr"])?;
    let mut a = vec!["x509", "-req", "-in", "ask.csr", "-CA", "ark.pem", "-CAkey", "ark.key", "-CAcreateserial"];
    a.extend(["-days", "3650", "-extfile", "ca.ext", "-out", "ask.pem"]);
    a.extend(pss);
    openssl(dir, &a)?;
    for name in ["vcek", "other"] {
        openssl(dir, &["ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", &format!("{name}.key")])?;
    }
    openssl(dir, &["req", "-new", "-key", "vcek.key", "-subj", "/CN=SEV-VCEK", "-out", "vcek.csr"])?;
    let mut a = vec!["x509", "-req", "-in", "vcek.csr", "-CA", "ask.pem", "-CAkey", "ask.key", "-CAcreateserial"];
    a.extend(["-days", "3650", "-extfile", "vcek.ext", "-outform", "DER", "-out", "vcek.der"]);
    a.extend(pss);
    openssl(dir, &a)?;
    let pem_to_der = |name: &str| -> Result<Vec<u8>> {
        Ok(Command::new("openssl").current_dir(dir).args(["x509", "-in", name, "-outform", "DER"]).output()?.stdout)
    };
    use veil_agent::snp::evidence::CertType;
    let table = veil_agent::snp::attest::build_cert_table(&[
        (CertType::Vcek, std::fs::read(dir.join("vcek.der"))?),
        (CertType::Ask, pem_to_der("ask.pem")?),
        (CertType::Ark, pem_to_der("ark.pem")?),
    ]);
    std::fs::write(dir.join("certs.table"), table)?;
    ec_scalar(dir, "vcek.key", &dir.join("vcek.scalar"))?;
    ec_scalar(dir, "other.key", &dir.join("other.scalar"))?;
    // AMD's CRL (issued by the ARK; it revokes ASKs): empty.
    let mut sig = vec!["-md", "sha384"];
    sig.extend(&pss[1..]);
    std::fs::write(dir.join("crl.der"), openssl_crl(dir, "ark", "ark.pem", "ark.key", &sig)?)?;
    Ok(TestChain {
        crl: dir.join("crl.der"),
        ark_pem: dir.join("ark.pem"),
        table: dir.join("certs.table"),
        vcek_scalar: dir.join("vcek.scalar"),
        other_scalar: dir.join("other.scalar"),
    })
}

/// A running `veil kbs serve` (killed when dropped), and its URL.
pub struct Broker {
    child: std::process::Child,
    /// http://127.0.0.1:PORT
    pub url: String,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `veil kbs serve` releasing `secret` on a port the OS picks, with the TEE options `tee`,
/// its log in `log`.
pub fn start_broker(veil: &Path, secret: &Path, tee: &[&std::ffi::OsStr], log: &Path) -> Result<Broker> {
    let mut serve = Command::new(veil);
    serve.args(["kbs", "serve", "--listen", "127.0.0.1:0", "--secret"]).arg(secret).args(tee);
    let (child, addr) = veil_testkit::spawn_announcing_logged(
        &mut serve,
        veil_testkit::KBS_LISTENING,
        Duration::from_secs(30),
        Some(std::fs::File::create(log)?),
    )
    .context("starting veil kbs serve")?;
    Ok(Broker { child, url: format!("http://{addr}") })
}

/// The broker's log's length: where the lines of the next boot begin.
pub fn log_mark(log: &Path) -> Result<usize> {
    Ok(std::fs::metadata(log).map(|m| m.len() as usize).unwrap_or(0))
}

/// Whether the broker was asked for an attestation, and if it was, that it refused it for
/// `why`: checked on the broker's own refusal line (`POST /kbs/v0/attest: session ..: refused
/// (401 AttestationFailed): ..`) among the lines logged after `from`, not on text the broker
/// prints either way. `asked: false` means the firmware must have refused before attesting.
pub fn broker_refusal(log: &Path, from: usize, why: &str, asked: bool) -> Result<()> {
    let text = std::fs::read_to_string(log)?;
    let new = text.get(from..).unwrap_or_default();
    let attest: Vec<&str> = new.lines().filter(|l| l.contains("POST /kbs/v0/attest: ")).collect();
    if !asked {
        if !attest.is_empty() {
            bail!(
                "the firmware should have refused before attesting, but the broker was asked:\n{}",
                attest.join("\n")
            );
        }
        return Ok(());
    }
    if !attest.iter().any(|l| l.contains(": refused (401 AttestationFailed): ") && l.contains(why)) {
        bail!("the broker did not refuse the attestation for `{why}`; its lines for this boot:\n{new}");
    }
    Ok(())
}

/// `veil kbs serve` for SNP evidence, with the test root.
fn start_snp_broker(veil: &Path, secret: &Path, reference: &Path, chain: &TestChain, log: &Path) -> Result<Broker> {
    start_snp_broker_with(veil, secret, reference, chain, &[], log)
}

/// The same with more of the broker's options (`--snp-min-tcb`, `--min-bundle-version`, ...).
fn start_snp_broker_with(
    veil: &Path,
    secret: &Path,
    reference: &Path,
    chain: &TestChain,
    extra: &[&str],
    log: &Path,
) -> Result<Broker> {
    let mut tee: Vec<&std::ffi::OsStr> = vec![
        "--snp-reference".as_ref(),
        reference.as_os_str(),
        "--snp-test-root".as_ref(),
        chain.ark_pem.as_os_str(),
        "--snp-crl".as_ref(),
        chain.crl.as_os_str(),
    ];
    tee.extend(extra.iter().map(std::ffi::OsStr::new));
    start_broker(veil, secret, &tee, log)
}

/// Boot a model ROM from `image`, with `fw_cfg` files for the model (AMD-SP, TDX module) and,
/// if given, a relay to `broker`.
pub fn boot_disk(
    veil: &Path,
    rom: &Path,
    name: &str,
    image: &Path,
    fw_cfg: &[(&str, &Path)],
    broker: Option<&Broker>,
) -> Result<qemu::Run> {
    boot_disk_with(veil, rom, name, image, fw_cfg, broker, &[])
}

/// [`boot_disk`], then (issue 34) once Linux has run and powered off, guest RAM (512 MiB) is
/// saved through the QEMU monitor and must hold none of `keys`: every copy the firmware made of
/// a secret it does not hand over is gone (the root key travels in the initrd and is not in
/// `keys`).
#[allow(clippy::too_many_arguments)]
pub fn boot_disk_scanned(
    veil: &Path,
    rom: &Path,
    name: &str,
    image: &Path,
    fw_cfg: &[(&str, &Path)],
    broker: Option<&Broker>,
    keys: &[(String, Vec<u8>)],
) -> Result<qemu::Run> {
    let dir = qemu::run_dir(&format!("{name}-memory"))?;
    let monitor = dir.join(format!("{name}.monitor"));
    let dump = dir.join(format!("{name}.mem"));
    let _ = std::fs::remove_file(qemu::log_path(name)?); // the thread must not read an old one
    let saver = save_memory_after_power_off(monitor.clone(), qemu::log_path(name)?, dump.clone());
    let extra =
        ["-no-shutdown".to_string(), "-monitor".into(), format!("unix:{},server=on,wait=off", monitor.display())];
    let run = boot_disk_with(veil, rom, name, image, fw_cfg, broker, &extra)?;
    saver.join().map_err(|_| anyhow::anyhow!("the memory-saving thread panicked"))??;
    let memory = std::fs::read(&dump)?;
    let _ = std::fs::remove_file(&dump);
    crate::scan_for_keys(&format!("guest memory after {name} (the firmware handed over, Linux ran)"), &memory, keys)?;
    eprintln!("xtask: {name}: guest memory after Linux holds none of {} keys", keys.len());
    Ok(run)
}

fn boot_disk_with(
    veil: &Path,
    rom: &Path,
    name: &str,
    image: &Path,
    fw_cfg: &[(&str, &Path)],
    broker: Option<&Broker>,
    extra: &[String],
) -> Result<qemu::Run> {
    let mut args = crate::demo_image::disk_args(image);
    args.extend(extra.iter().cloned());
    let relay_dir = image.parent().unwrap();
    boot_with_relay(veil, rom, name, args, relay_dir, fw_cfg, broker, Duration::from_secs(300))
}

/// Boot a model ROM with QEMU arguments `args`, `fw_cfg` files for the model (AMD-SP, TDX
/// module) and, if given, a relay to `broker` (its socket in `relay_dir`); kill it after
/// `timeout`.
#[allow(clippy::too_many_arguments)]
pub fn boot_with_relay(
    veil: &Path,
    rom: &Path,
    name: &str,
    mut args: Vec<String>,
    relay_dir: &Path,
    fw_cfg: &[(&str, &Path)],
    broker: Option<&Broker>,
    timeout: Duration,
) -> Result<qemu::Run> {
    for (n, f) in fw_cfg {
        args.extend(["-fw_cfg".to_string(), format!("name={n},file={}", f.display())]);
    }
    let mut relay = None;
    if let Some(b) = broker {
        let sock = qemu::socket_path(relay_dir, "relay.sock")?;
        relay = Some(
            Command::new(veil)
                .args(["kbs", "relay", "--socket"])
                .arg(&sock)
                .args(["--broker", &b.url])
                .stderr(std::process::Stdio::null())
                .spawn()
                .context("starting veil kbs relay")?,
        );
        args.extend(qemu::relay_console_args(&sock));
    }
    let r = qemu::boot(rom, name, &args, timeout);
    if let Some(mut r) = relay {
        let _ = r.kill();
        let _ = r.wait();
    }
    r
}

/// What the attestation tests and the benchmark share: the demo disk, a test chain, the
/// launch digest (sev-snp-measure's, for the model AMD-SP; veil measure's reference values
/// for the broker), HOST_DATA from the image's init-data, and the broker.
pub struct Setup {
    veil: PathBuf,
    dir: PathBuf,
    secret: PathBuf,
    image: PathBuf,
    chain: TestChain,
    measurement_file: PathBuf,
    host_data_file: PathBuf,
    broker_log: PathBuf,
    /// `veil kbs serve` with this launch's reference values and the test root.
    pub broker: Broker,
}

impl Setup {
    fn new(model_rom: &Path, oracle: &Path, name: &str) -> Result<Setup> {
        let crate::DemoDisk { veil, dir, secret, image } = crate::fresh_demo_disk(name)?;
        Setup::for_image(model_rom, oracle, veil, dir, secret, image)
    }

    /// The same for `image`, made by `veil image build` with `secret`; files go to `dir`.
    pub fn for_image(
        model_rom: &Path,
        oracle: &Path,
        veil: PathBuf,
        dir: PathBuf,
        secret: PathBuf,
        image: PathBuf,
    ) -> Result<Setup> {
        let chain = test_chain(&dir.join("chain"))?;
        let out = Command::new(oracle)
            .args(["--mode", "snp", "--ovmf"])
            .arg(model_rom)
            .args(["--vcpus", "2", "--vcpu-type", "EPYC-v4"])
            .output()?;
        let measurement =
            hex::decode(String::from_utf8_lossy(&out.stdout).trim()).context("sev-snp-measure's digest")?;
        let measurement_file = dir.join("measurement.bin");
        std::fs::write(&measurement_file, &measurement)?;
        let reference = dir.join("snp-reference.json");
        crate::run(
            Command::new(&veil)
                .args(["measure", "--platform", "snp", "--rom"])
                .arg(model_rom)
                .args(["--vcpus", "2", "--vcpu-type", "EPYC-v4", "--out"])
                .arg(&reference),
        )?;
        let broker_log = dir.join("broker.log");
        let broker = start_snp_broker(&veil, &secret, &reference, &chain, &broker_log)?;
        // HOST_DATA: the digest of the init-data veil image build wrote beside the image (its
        // algorithm is sha256), computed here from the file.
        let init_data = std::fs::read(image.with_extension("init-data.toml")).context("the image's init-data")?;
        if !String::from_utf8_lossy(&init_data).contains("algorithm = \"sha256\"") {
            bail!("the init-data does not name sha256");
        }
        let host_data_file = dir.join("host-data.bin");
        std::fs::write(&host_data_file, <sha2::Sha256 as sha2::Digest>::digest(&init_data))?;
        Ok(Setup { veil, dir, secret, image, chain, measurement_file, host_data_file, broker_log, broker })
    }

    /// Every secret of this launch the firmware must not leave in memory: the master key and
    /// salt, the measurement secret, the veil-boot disk key, VMPCK0 and the sealing key (all
    /// but the veil-root key, which the initrd carries to Linux). VMPCK0 and the sealing key
    /// are computed here from the model AMD-SP's definitions (kernel/src/model/snp.rs
    /// test_vmpck; agent::snp::psp's key derivation over the launch's fields).
    fn keys_not_handed_over(&self) -> Result<Vec<(String, Vec<u8>)>> {
        use sha2::Digest;
        use veil_agent::snp::{requests, seal};
        let mut keys = crate::key_material(&self.veil, &self.secret, &self.image)?;
        keys.retain(|(name, _)| name != "veil-root disk key");
        let mut vmpck0 = sha2::Sha256::new();
        vmpck0.update(b"veilboot SNP model VMPCK");
        vmpck0.update([0u8]);
        keys.push(("VMPCK0".into(), vmpck0.finalize().to_vec()));
        let mut k = sha2::Sha256::new();
        k.update([0x3C; 32]); // the model AMD-SP's key secret
        k.update(std::fs::read(&self.chain.vcek_scalar)?);
        k.update([0u8; 4]); // root key select: the VCEK
        k.update(seal::KEY_VMPL.to_le_bytes());
        k.update(seal::KEY_FIELDS.to_le_bytes());
        if seal::KEY_FIELDS & requests::FIELD_GUEST_POLICY != 0 {
            k.update(0x3_0000u64.to_le_bytes()); // the model's default policy (honest launch)
        }
        if seal::KEY_FIELDS & requests::FIELD_MEASUREMENT != 0 {
            k.update(std::fs::read(&self.measurement_file)?);
        }
        if seal::KEY_FIELDS & requests::FIELD_TCB_VERSION != 0 {
            k.update(MODEL_TCB.to_le_bytes()); // sealed at the model's committed TCB
        }
        keys.push(("sealing key".into(), k.finalize().to_vec()));
        Ok(keys)
    }

    /// The model AMD-SP's files of an honest launch.
    pub fn honest(&self) -> Vec<(&'static str, &Path)> {
        vec![
            ("opt/veil/test-snp-vcek", &self.chain.vcek_scalar),
            ("opt/veil/test-snp-certs", &self.chain.table),
            ("opt/veil/test-snp-measurement", &self.measurement_file),
            ("opt/veil/test-snp-host-data", &self.host_data_file),
        ]
    }
}

/// SEV-SNP attestation end to end under TCG, with the model AMD-SP and a test chain: the
/// first boot attests to the broker with a report, gets the secret, seals it and reaches the
/// root filesystem; the second unseals locally; refusals for a measurement that is not a
/// reference value, a debug policy, another chip's signature, and a launch for another boot
/// target (HOST_DATA).
pub fn attestation_tests(model_rom: &Path, oracle: &Path) -> Result<()> {
    let setup = Setup::new(model_rom, oracle, "snp-attest")?;
    let Setup { veil, dir, image, chain, broker_log, broker, .. } = &setup;
    let (veil, dir, image, broker_log) = (veil.as_path(), dir.as_path(), image.as_path(), broker_log.as_path());
    let honest = setup.honest();

    eprintln!("xtask: snp test: first boot: report to the broker, secret released, sealed; root filesystem");
    let first = boot_disk(veil, model_rom, "snp-attest-first", image, &honest, Some(broker))?;
    first
        .expect("is the digest of this disk's init-data (boot target bound)")?
        .expect("snp: veil-boot has no veil-snp token (first boot)")?
        .expect("snp: attestation report of 1184 bytes")?
        .expect("3 certificates from the host")?
        .expect("kbs: the broker verified the snp evidence and released the master secret")?
        .expect("snp: sealed the master secret with this launch's derived key")?
        .expect(&format!("{} clusterID=", crate::demo_image::ROOT_MARKER))?;
    let log = std::fs::read_to_string(broker_log)?;
    if !log.contains(
        "SNP report verified: signature: over the report's bytes by the VCEK, certified by the ASK, certified by the \
         TEST root given on the command line (not AMD's); the ASK is not on AMD's CRL",
    ) || !log.contains("HOST_DATA is the init-data's digest")
    {
        bail!("the broker's log does not show the SNP verification:\n{log}");
    }

    eprintln!("xtask: snp test: second boot: unsealed locally, no broker; no key left in guest memory after Linux");
    let keys = setup.keys_not_handed_over()?;
    let second = boot_disk_scanned(veil, model_rom, "snp-attest-second", image, &honest, None, &keys)?;
    second
        .expect("snp: master secret unsealed from veil-boot token")?
        .expect(&format!("{} clusterID=", crate::demo_image::ROOT_MARKER))?;
    if second.log.contains("kbs: asking the key broker") {
        bail!("the second boot asked the broker although its token should open");
    }

    eprintln!("xtask: snp test: a tampered veil-snp token does not open; the broker is asked again");
    tamper_snp_token(veil, image, &setup.secret)?;
    let again = boot_disk(veil, model_rom, "snp-attest-tampered-token", image, &honest, Some(broker))?;
    again
        .expect("does not open with this launch's sealing key")?
        .expect("kbs: the broker verified the snp evidence and released the master secret")?
        .expect("snp: sealed the master secret with this launch's derived key")?
        .expect(crate::demo_image::ROOT_MARKER)?;

    eprintln!("xtask: snp test: refusals (each on the serial log and the broker's log)");
    let zeros = dir.join("zeros48.bin");
    std::fs::write(&zeros, [0u8; 48])?;
    let debug = dir.join("debug-policy.bin");
    std::fs::write(&debug, (0x3_0000u64 | (1 << 19)).to_le_bytes())?;
    let other_host_data = dir.join("other-host-data.bin");
    std::fs::write(&other_host_data, [0x77u8; 32])?;
    // (name, model AMD-SP files, the reason, whether the broker is asked at all)
    let cases: Vec<(&str, Vec<(&str, &Path)>, &str, bool)> = vec![
        (
            // Another launch (ROM): the token does not open, and the broker refuses it.
            "measurement",
            vec![honest[0], honest[1], ("opt/veil/test-snp-measurement", &zeros), honest[3]],
            "is not among the reference values",
            true,
        ),
        ("debug", [honest.clone(), vec![("opt/veil/test-snp-policy", &debug)]].concat(), "allows debugging", true),
        (
            "other-chip",
            vec![("opt/veil/test-snp-vcek", &chain.other_scalar), honest[1], honest[2], honest[3]],
            "the report's signature does not verify with the VCEK's key",
            true,
        ),
        (
            // A launch made for another boot target: refused before any key is asked for.
            "host-data",
            vec![honest[0], honest[1], honest[2], ("opt/veil/test-snp-host-data", &other_host_data)],
            "launch binding: HOST_DATA 7777",
            false,
        ),
    ];
    for (name, files, why, broker_asked) in cases {
        let from = log_mark(broker_log)?;
        let r = boot_disk(veil, model_rom, &format!("snp-refused-{name}"), image, &files, Some(broker))?;
        r.expect(why)?.expect_exit(qemu::EXIT_FAILURE)?;
        if r.log.contains(crate::demo_image::ROOT_MARKER) {
            bail!("the {name} case reached the root filesystem");
        }
        broker_refusal(broker_log, from, why, broker_asked).with_context(|| format!("the {name} case"))?;
    }
    unbound_volume_tests(&setup, model_rom)?;
    tcb_rollback_tests(&setup, model_rom)?;
    never_seal_test(&setup, model_rom)
}

/// Issue 31, item 4, on the disk the boots above left with a token sealed at the model's TCB:
/// after a firmware update (the model's TCB raised) the token opens without the broker and is
/// sealed again at the new committed TCB; after a rollback (the TCB lowered again: the
/// hostile AMD-SP) that token is refused by the firmware, which asks the broker, which refuses
/// the report's TCB (the operator raised `--snp-min-tcb` with the update). Before the fix the
/// rollback boot unsealed locally and booted without meeting the broker.
fn tcb_rollback_tests(setup: &Setup, model_rom: &Path) -> Result<()> {
    let Setup { veil, dir, image, secret, chain, .. } = setup;
    let honest = setup.honest();
    eprintln!(
        "xtask: snp test: an AMD-SP firmware update: the token opens at its TCB and is sealed again at the new one"
    );
    let updated = dir.join("tcb-updated.bin");
    std::fs::write(&updated, UPDATED_TCB.to_le_bytes())?;
    let files = [honest.clone(), vec![("opt/veil/test-snp-tcb", updated.as_path())]].concat();
    let r = boot_disk(veil, model_rom, "snp-tcb-update", image, &files, None)?;
    r.expect("policy and the TCB it was sealed at; bound to this volume and bundle)")?
        .expect(&format!(
            "snp: sealed the master secret with this launch's derived key at the committed TCB {UPDATED_TCB:#018x}"
        ))?
        .expect(crate::demo_image::ROOT_MARKER)?;
    if r.log.contains("kbs: asking") {
        bail!("the updated platform asked the broker although its token should open");
    }

    eprintln!(
        "xtask: snp test: the AMD-SP rolled back below the token's TCB: refused, the broker asked (and refuses the TCB)"
    );
    let min_tcb_log = dir.join("broker-min-tcb.log");
    let reference = dir.join("snp-reference.json");
    let raised = start_snp_broker_with(veil, secret, &reference, chain, &["--snp-min-tcb", "snp=0x19"], &min_tcb_log)?;
    let r = boot_disk(veil, model_rom, "snp-tcb-rollback", image, &honest, Some(&raised))?;
    r.expect(&format!(
        ": sealed at TCB {UPDATED_TCB:#018x}, above the AMD-SP's committed TCB {MODEL_TCB:#018x}: the AMD-SP's firmware was rolled back"
    ))?
    .expect("kbs: asking the key broker")?
    .expect_exit(qemu::EXIT_FAILURE)?;
    if r.log.contains("master secret unsealed") || r.log.contains(crate::demo_image::ROOT_MARKER) {
        bail!("the rolled-back AMD-SP opened the token:\n{}", r.log);
    }
    broker_refusal(&min_tcb_log, 0, "SNP SPL 24 is below the minimum 25 (--snp-min-tcb)", true)?;
    Ok(())
}

/// Issue 31, item 5: an image built with `veil image build --never-seal` (same secret, so the
/// same broker) asks the broker, boots, and leaves no sealed token in its header: the next
/// boot asks the broker again. (The host cannot clear the option: agent bundle.rs
/// `never_seal_is_under_the_mac`.)
fn never_seal_test(setup: &Setup, model_rom: &Path) -> Result<()> {
    let Setup { veil, dir, secret, broker, .. } = setup;
    eprintln!("xtask: snp test: a --never-seal image: the broker is asked, nothing is sealed");
    let image = crate::demo_image::build_variant(veil, secret, dir, "never-seal.img", &["--never-seal"])?;
    let init_data = std::fs::read(image.with_extension("init-data.toml")).context("the image's init-data")?;
    let host_data = dir.join("host-data-never-seal.bin");
    std::fs::write(&host_data, <sha2::Sha256 as sha2::Digest>::digest(&init_data))?;
    let honest = setup.honest();
    let files = vec![honest[0], honest[1], honest[2], ("opt/veil/test-snp-host-data", host_data.as_path())];
    let r = boot_disk(veil, model_rom, "snp-never-seal", &image, &files, Some(broker))?;
    r.expect("the image is built --never-seal: no local unseal, the broker is asked")?
        .expect("kbs: the broker verified the snp evidence and released the master secret")?
        .expect("the image is built --never-seal: nothing sealed, the next boot asks the broker")?
        .expect(crate::demo_image::ROOT_MARKER)?;
    let mut types = Vec::new();
    crate::tpm_test::edit_boot_tokens(&image, |tokens| {
        types = tokens.iter().map(|(_, t)| t["type"].as_str().unwrap_or("?").to_string()).collect();
    })?;
    if types.iter().any(|t| t == veil_agent::snp::seal::TOKEN_TYPE) {
        bail!("the --never-seal image has a veil-snp token after its boot: {types:?}");
    }
    let _ = std::fs::remove_file(&image);
    Ok(())
}

/// Issue 35, case 2 (each failed before the fix): a disk whose init-data was deleted from the
/// clear header is refused before any key is asked for (before, the firmware said "not bound",
/// unsealed its veil-snp token and booted); a veil-snp token beside another bundle (the clear
/// header's manifest and init-data changed, the launch's HOST_DATA naming them) does not open
/// (before, the token opened: its key binds the ROM only).
fn unbound_volume_tests(setup: &Setup, model_rom: &Path) -> Result<()> {
    let Setup { veil, dir, image, broker, .. } = setup;
    let honest = setup.honest();
    eprintln!("xtask: snp test: a disk without init-data: refused before any key is asked for");
    let copy = dir.join("snp-no-init-data.img");
    std::fs::copy(image, &copy)?;
    crate::tpm_test::edit_boot_tokens(&copy, |tokens| {
        crate::tpm_test::bundle_token(tokens).as_object_mut().expect("an object").remove("init_data");
    })?;
    let r = boot_disk(veil, model_rom, "snp-no-init-data", &copy, &honest, Some(broker))?;
    r.expect_exit(qemu::EXIT_FAILURE)?
        .expect("veil-boot is not bound to a boot target: its veil-bundle token carries no init-data")?;
    for never in ["master secret unsealed", "kbs: asking", crate::demo_image::ROOT_MARKER] {
        if r.log.contains(never) {
            bail!("a disk without init-data: the log shows `{never}`:\n{}", r.log);
        }
    }

    eprintln!("xtask: snp test: the veil-snp token beside another bundle does not open");
    let mut doc = String::new();
    crate::tpm_test::edit_boot_tokens(&copy, |tokens| {
        let t = crate::tpm_test::bundle_token(tokens);
        let cmdline = format!("{} veil.review=HOST-CHOSEN-BUNDLE-B", t["manifest"]["cmdline"].as_str().unwrap_or(""));
        t["manifest"]["cmdline"] = veil_agent::json::Value::String(cmdline);
        let manifest = veil_agent::bundle::Manifest::from_json(&t["manifest"]).expect("the manifest");
        doc = veil_agent::bundle::init_data(&manifest);
        t["init_data"] = veil_agent::json::Value::String(doc.clone());
    })?;
    let host_data = dir.join("host-data-bundle-b.bin");
    std::fs::write(&host_data, <sha2::Sha256 as sha2::Digest>::digest(doc.as_bytes()))?;
    let files = vec![honest[0], honest[1], honest[2], ("opt/veil/test-snp-host-data", host_data.as_path())];
    let r = boot_disk(veil, model_rom, "snp-token-other-bundle", &copy, &files, Some(broker))?;
    r.expect("is the digest of this disk's init-data (boot target bound)")?
        .expect("does not open with this launch's sealing key for this boot volume")?
        .expect_exit(qemu::EXIT_FAILURE)?;
    if r.log.contains("master secret unsealed") || r.log.contains(crate::demo_image::ROOT_MARKER) {
        bail!("the veil-snp token opened beside another bundle:\n{}", r.log);
    }
    let _ = std::fs::remove_file(&copy);
    rollback_tests(setup, model_rom)
}

/// Issue 35, bundle rollback, on a first boot (the veil-snp token removed, so the broker is
/// asked), against a second broker that requires bundle version 2 (the demo disk is version 1):
/// - the honest version-1 disk: the broker's own refusal line names the rollback;
/// - the same disk with init-data claiming version 2 (HOST_DATA its digest, as a host would
///   launch it): the firmware refuses before any key is asked for, since the init-data is not
///   the one its manifest makes (before, the broker read version 2, released the secret and
///   the old bundle booted).
fn rollback_tests(setup: &Setup, model_rom: &Path) -> Result<()> {
    let Setup { veil, dir, secret, image, chain, .. } = setup;
    let honest = setup.honest();
    let broker_log = dir.join("broker-min-version.log");
    let reference = dir.join("snp-reference.json");
    let broker = start_snp_broker_with(veil, secret, &reference, chain, &["--min-bundle-version", "2"], &broker_log)?;
    let copy = dir.join("snp-rollback.img");
    std::fs::copy(image, &copy)?;
    crate::tpm_test::edit_boot_tokens(&copy, |tokens| tokens.retain(|(_, t)| t["type"].as_str() != Some("veil-snp")))?;

    eprintln!("xtask: snp test: a version-1 bundle against a broker requiring version 2: the broker refuses");
    let from = log_mark(&broker_log)?;
    let r = boot_disk(veil, model_rom, "snp-rollback-refused", &copy, &honest, Some(&broker))?;
    r.expect("kbs: asking the key broker")?.expect_exit(qemu::EXIT_FAILURE)?;
    if r.log.contains(crate::demo_image::ROOT_MARKER) {
        bail!("a version-1 bundle booted against a broker requiring version 2:\n{}", r.log);
    }
    broker_refusal(&broker_log, from, "names bundle version 1, below the minimum 2", true)?;

    eprintln!("xtask: snp test: the version-1 bundle with init-data claiming version 2: the firmware refuses");
    let mut doc = String::new();
    crate::tpm_test::edit_boot_tokens(&copy, |tokens| {
        let t = crate::tpm_test::bundle_token(tokens);
        let manifest = veil_agent::bundle::Manifest::from_json(&t["manifest"]).expect("the manifest");
        doc = veil_agent::initdata::document(&veil_agent::bundle::manifest_sha384(&manifest), Some(2));
        t["init_data"] = veil_agent::json::Value::String(doc.clone());
    })?;
    let host_data = dir.join("host-data-claims-v2.bin");
    std::fs::write(&host_data, <sha2::Sha256 as sha2::Digest>::digest(doc.as_bytes()))?;
    let files = vec![honest[0], honest[1], honest[2], ("opt/veil/test-snp-host-data", host_data.as_path())];
    let from = log_mark(&broker_log)?;
    let r = boot_disk(veil, model_rom, "snp-rollback-claimed-version", &copy, &files, Some(&broker))?;
    r.expect("launch binding: the init-data claims another bundle version than this disk's manifest binds")?
        .expect_exit(qemu::EXIT_FAILURE)?;
    if r.log.contains(crate::demo_image::ROOT_MARKER) {
        bail!("a version-1 bundle booted with init-data claiming version 2:\n{}", r.log);
    }
    broker_refusal(&broker_log, from, "", false)?;
    let _ = std::fs::remove_file(&copy);
    Ok(())
}

/// Flip one byte of the `veil-snp` token's ciphertext in `image`'s veil-boot header, with the
/// `veil luks token` commands on the partition copied out and back (a veil-boot header: they
/// take the master `secret` that opens it).
fn tamper_snp_token(veil: &Path, image: &Path, secret: &Path) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut disk = std::fs::OpenOptions::new().read(true).write(true).open(image)?;
    let gpt = veil_agent::gpt::Gpt::read(&mut disk).map_err(|e| anyhow::anyhow!("{e}"))?;
    let part = gpt.by_name("veil-boot").context("no veil-boot partition")?.clone();
    let mut bytes = vec![0u8; part.size() as usize];
    disk.seek(SeekFrom::Start(part.offset()))?;
    disk.read_exact(&mut bytes)?;
    let boot = image.with_extension("veil-boot.luks");
    std::fs::write(&boot, &bytes)?;
    let list = Command::new(veil).args(["luks", "token", "list"]).arg(&boot).output()?;
    let text = String::from_utf8_lossy(&list.stdout).into_owned();
    let (id, json) = text
        .lines()
        .find_map(|l| l.split_once('\t').filter(|(_, j)| j.contains("\"veil-snp\"")))
        .context("no veil-snp token in the header")?;
    let mut token: serde_json::Value = serde_json::from_str(json)?;
    token.as_object_mut().context("token")?.remove("keyslots");
    let ct = token["ciphertext"].as_str().context("ciphertext")?.to_string();
    let flipped = match ct.strip_prefix('A') {
        Some(rest) => format!("B{rest}"),
        None => format!("A{}", &ct[1..]),
    };
    token["ciphertext"] = serde_json::Value::String(flipped);
    let token_file = image.with_extension("token.json");
    std::fs::write(&token_file, serde_json::to_vec(&token)?)?;
    crate::run(Command::new(veil).args(["luks", "token", "remove", "--id", id, "--secret"]).arg(secret).arg(&boot))?;
    crate::run(
        Command::new(veil)
            .args(["luks", "token", "add", "--id", id, "--secret"])
            .arg(secret)
            .arg("--file")
            .arg(&token_file)
            .arg(&boot),
    )?;
    disk.seek(SeekFrom::Start(part.offset()))?;
    disk.write_all(&std::fs::read(&boot)?)?;
    let _ = std::fs::remove_file(&boot);
    Ok(())
}

/// Stage durations (ms) from a firmware log's timeline marks (`veil: t=<us> stage=<name>`):
/// each stage lasts until the next mark.
pub fn stage_ms(log: &str) -> Vec<(String, f64)> {
    let marks: Vec<(u64, String)> = log
        .lines()
        .filter_map(|l| {
            let rest = l.split_once("veil: t=")?.1;
            let (t, stage) = rest.split_once(" stage=")?;
            Some((t.parse().ok()?, stage.trim().to_string()))
        })
        .collect();
    marks.windows(2).map(|w| (w[0].1.clone(), (w[1].0 - w[0].0) as f64 / 1000.0)).collect()
}

/// `cargo xtask bench snp`: the SNP attestation phases of the firmware under TCG against the
/// model AMD-SP (so the AMD-SP's own latency is not in them), min / median over `runs` first
/// boots (each on a fresh copy of the image) and the later boots that unseal locally.
pub fn bench(model_rom: &Path, oracle: &Path, runs: usize) -> Result<String> {
    let setup = Setup::new(model_rom, oracle, "snp-bench")?;
    let honest = setup.honest();
    let mut first: Vec<Vec<(String, f64)>> = Vec::new();
    let mut later: Vec<Vec<(String, f64)>> = Vec::new();
    for i in 0..runs {
        let copy = setup.dir.join(format!("run{i}.img"));
        std::fs::copy(&setup.image, &copy)?;
        let r = boot_disk(&setup.veil, model_rom, "snp-bench-first", &copy, &honest, Some(&setup.broker))?;
        r.expect(crate::demo_image::ROOT_MARKER)?;
        first.push(stage_ms(&r.log));
        let r = boot_disk(&setup.veil, model_rom, "snp-bench-later", &copy, &honest, None)?;
        r.expect(crate::demo_image::ROOT_MARKER)?;
        later.push(stage_ms(&r.log));
        let _ = std::fs::remove_file(&copy);
    }
    let stat = |runs: &[Vec<(String, f64)>], stage: &str| -> Option<(f64, f64)> {
        let mut v: Vec<f64> =
            runs.iter().filter_map(|r| r.iter().find(|(s, _)| s == stage).map(|(_, ms)| *ms)).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some((v[0], v[v.len() / 2]))
    };
    let mut out = format!(
        "## SEV-SNP attestation phases (model AMD-SP)\n\nCommand: `cargo xtask bench snp`. The demo disk booted by the SNP model ROM under TCG (q35, 2 vCPUs), its\nguest requests answered by the model AMD-SP in the ROM's #UD handler: **measured against the model**, so\nthe real AMD-SP's latency is not in these numbers, and the model's own work (AES-GCM and the P-384\nreport signature, in TCG-emulated code) is inside `kbs-report` and `unseal`. Min / median of {runs} first boots\n(fresh image copies) and {runs} later boots.\n\n| phase (firmware, TCG) | what | min ms | median ms |\n|---|---|---:|---:|\n"
    );
    let rows: [(&str, &str, bool); 6] = [
        ("unseal", "HOST_DATA check (MSG_REPORT_REQ), MSG_KEY_REQ, the veil-snp token opened", false),
        (
            "kbs-auth",
            "POST /kbs/v0/auth through virtio-console (GHCB MMIO, shared bounce pool), `veil kbs relay` and HTTP",
            true,
        ),
        (
            "kbs-report",
            "ephemeral P-256 key, MSG_REPORT_REQ (extended: the host's certificate table), Trustee snp evidence JSON",
            true,
        ),
        (
            "kbs-attest",
            "POST /kbs/v0/attest: the broker verifies the chain, TCB, policy, measurement, report data and HOST_DATA",
            true,
        ),
        ("kbs-resource", "GET /kbs/v0/resource: JWE made by the broker, decrypted in the firmware", true),
        ("seal", "MSG_KEY_REQ and the veil-snp token written into the LUKS2 header", true),
    ];
    for (stage, what, on_first) in rows {
        let runs = if on_first { &first } else { &later };
        if let Some((min, med)) = stat(runs, stage) {
            out.push_str(&format!(
                "| `{stage}`{} | {what} | {min:.1} | {med:.1} |\n",
                if on_first { "" } else { " (later boots)" }
            ));
        }
    }
    Ok(out)
}
