//! `cargo xtask mutants [GROUP]`: mutation testing of agent/'s security-critical modules with
//! cargo-mutants (crates.io; installed with `cargo install --locked cargo-mutants` when
//! missing). Each group names its source files, optionally a function filter (`--re`), and the
//! test targets that cover them, so that a mutant is built and tested in seconds rather than
//! running every test of the crate. One job at a time (`-j1`) under `nice -n 19`: the machines
//! are 2 cores shared with other builds and QEMU boots, and mutants should only take idle CPU.
//! Each mutant's tests stop after the group's `timeout_s` (a mutant that loops is "timeout"), and each
//! group stops after $VEIL_MUTANTS_MINUTES (default 60) of wall clock, interrupted like a
//! Ctrl-C so that cargo-mutants still writes the outcomes of the mutants it finished; the
//! summary then says how many of the group's mutants were tested.
//! Not part of `cargo xtask test` or CI: a group takes from minutes to hours.
//! cargo-mutants takes a group's files in alphabetical order, so a large module that a time
//! limit should not crowd the others out of has a group of its own (tdx-collateral,
//! tdx-tdcall, snp-seal, snp-ghcb), which can be run, and run again, alone.
//! `VEIL_MUTANTS_FILES=verify.rs cargo xtask mutants tdx` runs only that file of a group (as
//! `tdx-verify`: its own output and section), e.g. again after the tests that kill its survivors.
//!
//! The results land in target/mutants/GROUP/mutants.out (`missed.txt` lists the survivors);
//! the summary line and the survivors go to BENCHMARKS.md (section `mutants-GROUP`). The mutated copies of
//! the tree (in /tmp) build into their own target directory, target/mutants/build (the
//! dependencies are built there once; only veil-agent is rebuilt per mutant), never into the
//! project's target/: cargo fingerprints a workspace crate by paths relative to the package, so
//! a `cargo test` in the checkout while a mutant is being tested overwrites the mutant's test
//! binaries with the unmutated ones, which cargo then takes as fresh, and the mutant "survives"
//! (seen on 2026-12-07: a make_credential returning garbage passed the swtpm activation
//! test). The copies find the shared corpus through $VEIL_TESTDATA (a copy in /tmp cannot see ../shared),
//! with VEIL_REQUIRE_TESTDATA and VEIL_REQUIRE_TOOLS set so that no test skips its way to
//! "caught nothing".

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{root, run, target_dir};

/// A mutant whose tests run longer than this (seconds) counts as "timeout" (caught). The
/// slowest group's unmutated tests take ~40 s on an idle machine.
const TEST_TIMEOUT_S: u32 = 300;
/// The same for groups whose unmutated tests take seconds (~15 s for tdx's under load).
const FAST_TIMEOUT_S: u32 = 120;
/// Building one mutant: the first one in a fresh copy of the tree builds all of veil-agent.
const BUILD_TIMEOUT_S: u32 = 1200;
/// Wall-clock limit of one group unless $VEIL_MUTANTS_MINUTES says otherwise.
const DEFAULT_GROUP_MINUTES: u32 = 60;

/// One group of modules and the tests that cover them.
struct Group {
    name: &'static str,
    files: &'static [&'static str],
    /// Only functions whose mutant name matches (cargo-mutants `--re`), or all.
    re: Option<&'static str>,
    /// `cargo test` target selections.
    tests: &'static [&'static str],
    /// A mutant whose tests run longer than this (seconds) counts as "timeout" (caught):
    /// [`TEST_TIMEOUT_S`] for the groups with slow tests (swtpm, Trustee, the LUKS2 and XTS
    /// corpora), less where the unmutated tests take seconds, so that each mutant that makes a
    /// parser loop costs minutes less.
    timeout_s: u32,
}

const GROUPS: [Group; 11] = [
    Group {
        name: "kbs-broker",
        files: &["agent/src/kbs/broker.rs"],
        re: Some("check_|attested_key|expected_r|replace equal"),
        tests: &["--lib", "--test=tpm_swtpm", "--test=kbs_trustee"],
        timeout_s: TEST_TIMEOUT_S,
    },
    Group { name: "bundle", files: &["agent/src/bundle.rs"], re: None, tests: &["--lib"], timeout_s: FAST_TIMEOUT_S },
    Group {
        name: "luks2",
        files: &["agent/src/luks2/validate.rs", "agent/src/luks2/crypto.rs"],
        re: None,
        tests: &["--lib", "--test=luks2_write", "--test=luks2_corpus"],
        timeout_s: TEST_TIMEOUT_S,
    },
    Group {
        name: "tpm",
        files: &["agent/src/tpm/quote.rs", "agent/src/tpm/credential.rs", "agent/src/tpm/policy.rs"],
        re: None,
        tests: &["--lib", "--test=tpm_swtpm", "--test=tpm_quote_signer", "--test=tpm_credential"],
        timeout_s: TEST_TIMEOUT_S,
    },
    Group {
        name: "snp",
        files: &["agent/src/snp/verify.rs", "agent/src/snp/guest_msg.rs"],
        re: None,
        tests: &["--lib", "--test=snp_reports", "--test=snp_forged"],
        timeout_s: FAST_TIMEOUT_S,
    },
    // seal.rs (the key derivation requests, the sealed blob) and ghcb.rs (the GHCB protocol
    // against a hostile hypervisor) are tested by the lib's snp tests only.
    Group {
        name: "snp-seal",
        files: &["agent/src/snp/seal.rs"],
        re: None,
        tests: &["--lib"],
        timeout_s: FAST_TIMEOUT_S,
    },
    Group {
        name: "snp-ghcb",
        files: &["agent/src/snp/ghcb.rs"],
        re: None,
        tests: &["--lib"],
        timeout_s: FAST_TIMEOUT_S,
    },
    Group {
        name: "tdx",
        files: &["agent/src/tdx/quote.rs", "agent/src/tdx/verify.rs", "agent/src/tdx/hob.rs"],
        re: None,
        // Not tdx_report (report.rs) nor tdx_ccel (the event log's parser): neither reaches
        // these files, and each test binary is linked again for every mutant.
        tests: &["--lib", "--test=tdx_quotes", "--test=tdx_hob_spec", "--test=tdx_forged"],
        timeout_s: FAST_TIMEOUT_S,
    },
    // The DCAP verdict (PCK chain, collateral signatures, QE identity, TCB levels): the lib's
    // unit tests, the real quotes and collateral, the forged-evidence refusals.
    Group {
        name: "tdx-collateral",
        files: &["agent/src/tdx/collateral.rs"],
        re: None,
        tests: &["--lib", "--test=tdx_quotes", "--test=tdx_forged"],
        timeout_s: FAST_TIMEOUT_S,
    },
    // The guest's TDCALL/TDVMCALL marshalling, against the lib's TDX module and VMM model.
    Group {
        name: "tdx-tdcall",
        files: &["agent/src/tdx/tdcall.rs"],
        re: None,
        tests: &["--lib"],
        timeout_s: FAST_TIMEOUT_S,
    },
    Group {
        name: "xts",
        files: &["agent/src/xts/mod.rs", "agent/src/xts/soft.rs", "agent/src/xts/selftest.rs"],
        re: None,
        tests: &["--lib", "--test=xts_vectors", "--test=xts_oracle"],
        timeout_s: TEST_TIMEOUT_S,
    },
];

/// The group names `cargo xtask mutants GROUP` takes.
pub fn group_names() -> Vec<&'static str> {
    GROUPS.iter().map(|g| g.name).collect()
}

/// Run `group` (or every group in turn).
pub fn mutants(group: Option<&str>) -> Result<()> {
    let tool = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin/cargo-mutants"));
    if !tool.as_ref().is_some_and(|t| t.exists())
        && !Command::new("cargo").args(["mutants", "--version"]).output().is_ok_and(|o| o.status.success())
    {
        eprintln!("xtask: installing cargo-mutants (cargo install --locked cargo-mutants)");
        run(Command::new("cargo").args(["install", "--locked", "cargo-mutants"]))?;
    }
    let testdata = std::env::var_os("VEIL_TESTDATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/testdata"));
    let testdata = std::fs::canonicalize(&testdata)
        .with_context(|| format!("the shared test corpus {} (set VEIL_TESTDATA)", testdata.display()))?;
    let minutes: u32 = match std::env::var("VEIL_MUTANTS_MINUTES") {
        Ok(m) => m.parse().with_context(|| format!("VEIL_MUTANTS_MINUTES={m:?} is not a number of minutes"))?,
        Err(_) => DEFAULT_GROUP_MINUTES,
    };
    // $VEIL_MUTANTS_FILES (comma-separated file names, e.g. `verify.rs`): only those of the
    // group's files, as a run of their own (`GROUP-STEM`: output, BENCHMARKS section), so that a
    // file's survivors can be run again after new tests without the whole group.
    let only: Vec<String> = std::env::var("VEIL_MUTANTS_FILES")
        .map(|v| v.split(',').map(|f| f.trim().to_string()).filter(|f| !f.is_empty()).collect())
        .unwrap_or_default();
    let mut summaries = Vec::new();
    for g in GROUPS.iter().filter(|g| group.is_none_or(|want| want == g.name)) {
        let (name, files) = subset(g, &only)?;
        let name = name.as_str();
        let out = target_dir().join("mutants").join(name);
        std::fs::create_dir_all(&out)?;
        // A previous (possibly interrupted) run's outcomes must not be counted again.
        let _ = std::fs::remove_dir_all(out.join("mutants.out"));
        let mut cmd = Command::new("timeout");
        cmd.args(["--signal=INT", "--kill-after=60", &format!("{minutes}m"), "nice", "-n", "19", "cargo"])
            .current_dir(root())
            .env("CARGO_TARGET_DIR", target_dir().join("mutants/build"))
            .env("VEIL_TESTDATA", &testdata)
            .env("VEIL_REQUIRE_TESTDATA", "1")
            .env("VEIL_REQUIRE_TOOLS", "1")
            .args(["mutants", "-p", "veil-agent", "-j1", "--no-shuffle"])
            .args(["--timeout", &g.timeout_s.to_string(), "--build-timeout", &BUILD_TIMEOUT_S.to_string()])
            .arg("--output")
            .arg(&out);
        for f in &files {
            cmd.args(["--file", f]);
        }
        if let Some(re) = g.re {
            cmd.args(["--re", re]);
        }
        for t in g.tests {
            cmd.arg(format!("--cargo-arg={t}"));
        }
        eprintln!("xtask: mutants {name}: {cmd:?}");
        // cargo-mutants exits non-zero when a mutant survives; the outcomes say which.
        let status = cmd.status().context("running cargo mutants")?;
        let summary = summarize(&out.join("mutants.out"))
            .with_context(|| format!("cargo mutants {name} ended with {status} and no outcomes"))?;
        eprintln!("xtask: mutants {name}: {summary}");
        let missed = std::fs::read_to_string(out.join("mutants.out/missed.txt")).unwrap_or_default();
        let only_env =
            if files.len() < g.files.len() { format!("VEIL_MUTANTS_FILES={} ", only.join(",")) } else { String::new() };
        let mut body = format!(
            "### Mutation testing: {name}\n\nCommand: `{only_env}VEIL_MUTANTS_MINUTES={minutes} cargo xtask mutants {}` (cargo-mutants -j1 under \
             nice -n 19, {} s per mutant's tests; files {}; {}tests {}).\n\n{summary}.\n",
            g.name,
            g.timeout_s,
            files.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", "),
            g.re.map(|r| format!("functions matching `{r}`; ")).unwrap_or_default(),
            g.tests.join(" "),
        );
        if !missed.trim().is_empty() {
            body.push_str("\nSurvivors (explained under \"Mutation testing\" below, or to be killed):\n\n```\n");
            body.push_str(missed.trim_end());
            body.push_str("\n```\n");
        }
        crate::write_section(&format!("mutants-{name}"), &body)?;
        summaries.push(format!("{name}: {summary}"));
    }
    if summaries.is_empty() {
        bail!("no mutants group named {group:?}");
    }
    eprintln!("xtask: mutants summary (survivors in target/mutants/GROUP/mutants.out/missed.txt):");
    for s in &summaries {
        eprintln!("  {s}");
    }
    Ok(())
}

/// The run's name and files: the whole group, or (`only` not empty) the group's files whose
/// name is one of `only`, named `GROUP-STEM` after the first of them.
fn subset(g: &Group, only: &[String]) -> Result<(String, Vec<&'static str>)> {
    if only.is_empty() {
        return Ok((g.name.to_string(), g.files.to_vec()));
    }
    let file_name = |f: &str| Path::new(f).file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    for o in only {
        if !g.files.iter().any(|f| file_name(f) == *o) {
            bail!("VEIL_MUTANTS_FILES: {o:?} is not one of group {}'s files {:?}", g.name, g.files);
        }
    }
    let files: Vec<&'static str> = g.files.iter().copied().filter(|f| only.contains(&file_name(f))).collect();
    if files.len() == g.files.len() {
        return Ok((g.name.to_string(), files));
    }
    let stem = |f: &str| Path::new(f).file_stem().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    Ok((format!("{}-{}", g.name, files.iter().map(|f| stem(f)).collect::<Vec<_>>().join("-")), files))
}

/// "N of TOTAL mutants tested: caught C, missed M, timeout T, unviable U; score C/(C+M+T) = P%",
/// from the per-outcome lists cargo-mutants writes in `out` (caught.txt, missed.txt, ...) and
/// the list of every mutant it found (mutants.json), so that a run the group's time limit cut
/// short says so.
fn summarize(out: &Path) -> Result<String> {
    if !out.join("caught.txt").exists() {
        bail!("{} has no caught.txt", out.display());
    }
    let n = |k: &str| -> usize {
        std::fs::read_to_string(out.join(format!("{k}.txt")))
            .map(|t| t.lines().filter(|l| !l.is_empty()).count())
            .unwrap_or(0)
    };
    let (caught, missed, timeout, unviable) = (n("caught"), n("missed"), n("timeout"), n("unviable"));
    let viable = caught + missed + timeout;
    let tested = viable + unviable;
    let found = std::fs::read(out.join("mutants.json"))
        .ok()
        .and_then(|j| serde_json::from_slice::<Vec<serde_json::Value>>(&j).ok())
        .map_or(tested, |all| all.len());
    let score = if viable == 0 { 0.0 } else { 100.0 * caught as f64 / viable as f64 };
    let untested = if tested < found {
        format!("; NOT TESTED: {} (the group's time limit stopped the run)", found - tested)
    } else {
        String::new()
    };
    Ok(format!(
        "{tested} of {found} mutants tested: caught {caught}, missed {missed}, timeout {timeout}, unviable {unviable}; score {score:.0}% of those tested{untested}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_each_outcome_list() {
        let dir = std::env::temp_dir().join(format!("veil-mutants-summary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(summarize(&dir).is_err(), "no outcome lists: no summary");
        for (k, lines) in [("caught", 3), ("missed", 1), ("timeout", 0), ("unviable", 2)] {
            std::fs::write(dir.join(format!("{k}.txt")), "a.rs:1:1: replace x\n".repeat(lines)).unwrap();
        }
        assert_eq!(
            summarize(&dir).unwrap(),
            "6 of 6 mutants tested: caught 3, missed 1, timeout 0, unviable 2; score 75% of those tested"
        );
        std::fs::write(dir.join("mutants.json"), format!("[{}{{}}]", "{},".repeat(9))).unwrap();
        assert_eq!(
            summarize(&dir).unwrap(),
            "6 of 10 mutants tested: caught 3, missed 1, timeout 0, unviable 2; score 75% of those tested; \
             NOT TESTED: 4 (the group's time limit stopped the run)"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_subset_of_a_groups_files_is_a_run_of_its_own() {
        let tdx = GROUPS.iter().find(|g| g.name == "tdx").unwrap();
        assert_eq!(subset(tdx, &[]).unwrap(), (String::from("tdx"), tdx.files.to_vec()));
        assert_eq!(
            subset(tdx, &[String::from("verify.rs")]).unwrap(),
            (String::from("tdx-verify"), vec!["agent/src/tdx/verify.rs"])
        );
        assert!(subset(tdx, &[String::from("seal.rs")]).is_err(), "not one of the group's files");
    }

    #[test]
    fn every_group_names_files_that_exist_and_tests() {
        for g in &GROUPS {
            assert!(!g.tests.is_empty(), "{}", g.name);
            for f in g.files {
                assert!(root().join(f).is_file(), "{}: {f}", g.name);
            }
        }
    }
}
