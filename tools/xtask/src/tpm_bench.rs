//! `cargo xtask bench tpm`: the attestation phases of a boot from the firmware's timeline
//! (TPM start-up, measuring the firmware and its configuration, measuring the boot target,
//! remote release through the key broker on first boots, unsealing the master secret on
//! later ones), on the demo disk under TCG, beside the same TPM operations issued by
//! tpm2-tools on the host against the same swtpm state.

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use veil_agent::timeline;

use crate::{DemoDisk, build_firmware, demo_image, fresh_demo_disk, run, tpm_test};

const RUNS: usize = 5;

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[0], v[v.len() / 2])
}

/// Wall time of one tpm2-tools command against `tcti`, in ms.
fn time_tool(tcti: &str, args: &[&str]) -> Result<f64> {
    let start = Instant::now();
    let st = Command::new(args[0])
        .args(&args[1..])
        .env("TPM2TOOLS_TCTI", tcti)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !st.success() {
        bail!("{} failed", args.join(" "));
    }
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

fn flush_all(tcti: &str) -> Result<()> {
    for kind in ["-t", "-l", "-s"] {
        run(Command::new("tpm2_flushcontext").arg(kind).env("TPM2TOOLS_TCTI", tcti))?;
    }
    Ok(())
}

pub fn bench() -> Result<String> {
    tpm_test::ensure_tools()?;
    let rom = build_firmware()?;
    let DemoDisk { veil, dir, secret, image, .. } = fresh_demo_disk("tpm-bench")?;
    let state = dir.join("tpm-state");
    tpm_test::provision(&state)?;
    // First boots: each on a fresh copy of the unsealed image, so each goes to the broker.
    let broker = tpm_test::start_broker(&veil, &rom, &image, &secret, &state, &dir)?;
    let pristine = dir.join("pristine.img");
    std::fs::copy(&image, &pristine)?;
    let kbs_stages = ["kbs-keys", "kbs-auth", "kbs-quote", "kbs-attest", "kbs-resource", "seal"];
    let mut per_kbs: Vec<Vec<f64>> = vec![Vec::new(); kbs_stages.len()];
    for i in 0..RUNS {
        std::fs::copy(&pristine, &image)?;
        let r = tpm_test::boot_with_broker(
            &veil,
            &rom,
            &format!("tpm-bench-release-{i}"),
            &state,
            &broker,
            &demo_image::disk_args(&image),
        )?;
        r.expect("kbs: the broker verified the TPM quote")?
            .expect("tpm: sealed the master secret")?
            .expect(demo_image::ROOT_MARKER)?;
        let phases = timeline::phases(&timeline::parse_log(&r.log));
        for (k, s) in kbs_stages.iter().enumerate() {
            let p = phases
                .iter()
                .find(|p| p.stage == *s)
                .with_context(|| format!("no {s} phase in {}", r.log_path.display()))?;
            per_kbs[k].push(p.duration_us as f64 / 1e3);
        }
    }
    drop(broker);
    let _ = std::fs::remove_file(&pristine);

    let stages = ["rot-start", "measure-firmware", "measure-target", "unseal"];
    let mut per_stage: Vec<Vec<f64>> = vec![Vec::new(); stages.len()];
    let mut unseal_only = Vec::new();
    let mut extends = 0;
    for i in 0..RUNS {
        let r = tpm_test::boot_with_tpm(&rom, &format!("tpm-bench-{i}"), &state, &demo_image::disk_args(&image))?;
        r.expect("tpm: master secret unsealed")?.expect(demo_image::ROOT_MARKER)?;
        let phases = timeline::phases(&timeline::parse_log(&r.log));
        for (k, s) in stages.iter().enumerate() {
            let p = phases
                .iter()
                .find(|p| p.stage == *s)
                .with_context(|| format!("no {s} phase in {}", r.log_path.display()))?;
            per_stage[k].push(p.duration_us as f64 / 1e3);
        }
        let us = r
            .log
            .lines()
            .find(|l| l.contains("master secret unsealed"))
            .and_then(|l| l.split(" in ").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok());
        unseal_only.push(us.context("no unseal time")? / 1e3);
        extends = r
            .log
            .lines()
            .find(|l| l.contains("event log of"))
            .and_then(|l| l.split("event log of ").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
    }

    // The peer: the same operations from the host with tpm2-tools (each a process of its own).
    let mut host: Vec<(&str, Vec<f64>)> = vec![
        ("TPM2_Startup(CLEAR)", vec![]),
        ("one PCR_Extend (sha256)", vec![]),
        ("CreatePrimary (systemd's ECC P-256 template)", vec![]),
        ("PCR policy session + Unseal (tpm2_unseal -p pcr:...)", vec![]),
        ("CreatePrimary of the RSA-2048 AK (endorsement hierarchy)", vec![]),
        ("Quote of the 24 SHA-256 PCRs with it", vec![]),
    ];
    let work = dir.join("host");
    std::fs::create_dir_all(&work)?;
    let p = |f: &str| work.join(f).display().to_string();
    tpm_test::with_host_tpm(&state, |tcti| {
        for _ in 0..RUNS {
            host[0].1.push(time_tool(tcti, &["tpm2_startup", "-c"])?);
            host[1].1.push(time_tool(tcti, &["tpm2_pcrextend", &format!("16:sha256={}", "11".repeat(32))])?);
            host[2].1.push(time_tool(
                tcti,
                &[&["tpm2_createprimary"][..], &tpm_test::SRK_TEMPLATE, &["-c", &p("prim.ctx")]].concat(),
            )?);
            // Without a resource manager every tool leaves its objects and sessions loaded.
            flush_all(tcti)?;
            run(Command::new("tpm2_createpolicy")
                .args(["--policy-pcr", "-l", "sha256:16", "-L", &p("pol")])
                .env("TPM2TOOLS_TCTI", tcti)
                .stdout(Stdio::null()))?;
            run(Command::new("sh").arg("-c").arg(format!("echo -n 0123456789abcdef0123456789abcdef | tpm2_create -C {} -L {} -i- -u {} -r {} -a 'fixedtpm|fixedparent|noda' >/dev/null && tpm2_flushcontext -t && tpm2_flushcontext -l && tpm2_flushcontext -s && tpm2_load -C {} -u {} -r {} -c {} >/dev/null", p("prim.ctx"), p("pol"), p("s.pub"), p("s.priv"), p("prim.ctx"), p("s.pub"), p("s.priv"), p("s.ctx"))).env("TPM2TOOLS_TCTI", tcti))?;
            flush_all(tcti)?;
            host[3].1.push(time_tool(tcti, &["tpm2_unseal", "-c", &p("s.ctx"), "-p", "pcr:sha256:16"])?);
            flush_all(tcti)?;
            host[4].1.push(time_tool(
                tcti,
                &[
                    "tpm2_createprimary",
                    "-C",
                    "e",
                    "-g",
                    "sha256",
                    "-G",
                    "rsa2048:rsassa-sha256:null",
                    "-a",
                    "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign",
                    "-c",
                    &p("ak.ctx"),
                ],
            )?);
            host[5].1.push(time_tool(
                tcti,
                &[
                    "tpm2_quote",
                    "-c",
                    &p("ak.ctx"),
                    "-l",
                    "sha256:all",
                    "-q",
                    &"5a".repeat(64),
                    "-m",
                    &p("q.msg"),
                    "-s",
                    &p("q.sig"),
                ],
            )?);
            flush_all(tcti)?;
        }
        Ok(())
    })?;

    let mut out = String::from(
        "## Attestation phases with a TPM (swtpm)\n\n\
         Command: `cargo xtask bench tpm`. The demo disk booted under TCG (q35, 2 vCPUs, swtpm\n\
         0.7.1 over QEMU's TIS emulation); each phase is the span between two firmware timeline\n\
         marks (`veil boot-report`), min / median of 5 boots. Beside it, the same TPM operations issued from the host by tpm2-tools 5.4\n\
         against the same swtpm state over TCP (each a process of its own, so a few ms of it is\n\
         process start-up): how much of a phase is the TPM itself.\n\n\
         | phase (firmware, TCG) | what | min ms | median ms |\n|---|---|---:|---:|\n",
    );
    let kbs_what = [
        "first boot, remote release: EK certificate (NV_Read), EK and RSA-2048 AK CreatePrimary",
        "POST /kbs/v0/auth through virtio-console, `veil kbs relay` and HTTP: the broker checks the EK certificate chain, MakeCredential",
        "ActivateCredential (policy session), ephemeral P-256 key, Quote of 24 SHA-256 PCRs, PCR_Read",
        "POST /kbs/v0/attest: the broker verifies the quote, credential, nonce, report data and reference PCRs",
        "GET /kbs/v0/resource: JWE (ECDH-ES+A256KW, A256GCM) made by the broker, decrypted in the firmware",
        "TPM2_Create (seal to PCRs 0,4,8,9) and the veil-tpm2 token written into the LUKS2 header",
    ];

    let what = [
        "TIS locality, TPM2_Startup(CLEAR), GetCapability(PCRS)",
        "the ROM file hashed per active bank (here SHA-256 and SHA-384, TCG-emulated) + PCR 0 extend; e820 + ACPI inputs into PCR 1",
        "boot target (PCR 4/8/9) from the veil-bundle token + 8 separators: 11 extends",
        "CreatePrimary (kept for the boot) + Load + policy session + PolicyPCR + Unseal + flushes",
    ];
    for (k, s) in stages.iter().enumerate() {
        if *s == "unseal" {
            // Boot order: a first boot releases and seals where a later boot unseals.
            for (j, kbs) in kbs_stages.iter().enumerate() {
                let (min, med) = stats(per_kbs[j].clone());
                out += &format!("| `{kbs}` | {} | {min:.1} | {med:.1} |\n", kbs_what[j]);
            }
        }
        let (min, med) = stats(per_stage[k].clone());
        out += &format!("| `{s}` | {} | {min:.1} | {med:.1} |\n", what[k]);
    }
    let (min, med) = stats(unseal_only);
    out += &format!(
        "| (inside `unseal`) | the unseal sequence alone, from the firmware's own log line | {min:.1} | {med:.1} |\n"
    );
    out += &format!(
        "\n{extends} measurements are extended and logged per boot.\n\n| host peer (tpm2-tools) | min ms | median ms |\n|---|---:|---:|\n"
    );
    for (name, v) in host {
        let (min, med) = stats(v);
        out += &format!("| {name} | {min:.1} | {med:.1} |\n");
    }
    out += "\n`measure-firmware` is mostly hashing the ROM in TCG-emulated code; the TPM work per extend\nis a few tenths of a millisecond (`measure-target`: 11 extends). The `kbs-*` rows come from 5\nfirst boots (a fresh copy of the unsealed image each), the other firmware rows from 5 later\nboots that unseal locally. In `kbs-keys` and `kbs-quote` swtpm derives RSA keys and signs\n(compare the host rows for the AK and the quote); the broker round trips (`kbs-auth`,\n`kbs-attest`) include the relay's frame handling and an HTTP request on the host.\n";
    Ok(out)
}
