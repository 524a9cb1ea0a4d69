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
//!
//! Two passes for a group with `slow_tests` (tpm: tests/tpm_swtpm.rs starts a software TPM and
//! takes minutes per mutant): the first pass runs every mutant against the fast `tests` only;
//! the second runs `cargo mutants --iterate` with the slow tests added, which skips what the
//! first pass caught or found unviable (cargo-mutants keeps the first pass's outcomes in
//! mutants.out.old and reads its caught.txt and unviable.txt) and so tests only the first
//! pass's survivors (missed, timeout, and any mutant the time limit left untested). Both
//! passes share the group's time limit. The summary counts each mutant once, by its last
//! outcome, and says what each pass caught; `missed.txt` of the second pass (in mutants.out)
//! lists the final survivors.
//!
//! After tests are added, `VEIL_MUTANTS_ITERATE=1 cargo xtask mutants GROUP` tests again only
//! what the group's earlier runs did not catch (`--iterate` again, over mutants.out), and
//! counts the rest by their earlier outcomes: each run leaves every mutant's last outcome in
//! target/mutants/GROUP/outcomes.txt. `VEIL_MUTANTS_BUILD` names another build directory than
//! target/mutants/build, for a second group run at the same time (two runs must never share
//! one: each would overwrite the other's test binaries, see above); copy target/mutants/build
//! there first to keep its dependencies.
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
    /// Slow test targets, run only in a second pass over the first pass's survivors (with
    /// `tests`); empty for a one-pass group.
    slow_tests: &'static [&'static str],
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
        slow_tests: &[],
        timeout_s: TEST_TIMEOUT_S,
    },
    Group {
        name: "bundle",
        files: &["agent/src/bundle.rs"],
        re: None,
        tests: &["--lib"],
        slow_tests: &[],
        timeout_s: FAST_TIMEOUT_S,
    },
    Group {
        name: "luks2",
        files: &["agent/src/luks2/validate.rs", "agent/src/luks2/crypto.rs"],
        re: None,
        tests: &["--lib", "--test=luks2_write", "--test=luks2_corpus"],
        slow_tests: &[],
        timeout_s: TEST_TIMEOUT_S,
    },
    Group {
        name: "tpm",
        files: &["agent/src/tpm/quote.rs", "agent/src/tpm/credential.rs", "agent/src/tpm/policy.rs"],
        re: None,
        tests: &["--lib", "--test=tpm_quote_signer", "--test=tpm_credential"],
        slow_tests: &["--test=tpm_swtpm"],
        timeout_s: TEST_TIMEOUT_S,
    },
    Group {
        name: "snp",
        files: &["agent/src/snp/verify.rs", "agent/src/snp/guest_msg.rs"],
        re: None,
        tests: &["--lib", "--test=snp_reports", "--test=snp_forged"],
        slow_tests: &[],
        timeout_s: FAST_TIMEOUT_S,
    },
    // seal.rs (the sealed token, the TCB it is derived at: the lib's tests, and real reports'
    // COMMITTED_TCB) and ghcb.rs (the GHCB protocol against a hostile hypervisor: the lib's).
    Group {
        name: "snp-seal",
        files: &["agent/src/snp/seal.rs"],
        re: None,
        tests: &["--lib", "--test=snp_reports"],
        slow_tests: &[],
        timeout_s: FAST_TIMEOUT_S,
    },
    Group {
        name: "snp-ghcb",
        files: &["agent/src/snp/ghcb.rs"],
        re: None,
        tests: &["--lib"],
        slow_tests: &[],
        timeout_s: FAST_TIMEOUT_S,
    },
    Group {
        name: "tdx",
        files: &["agent/src/tdx/quote.rs", "agent/src/tdx/verify.rs", "agent/src/tdx/hob.rs"],
        re: None,
        // Not tdx_report (report.rs) nor tdx_ccel (the event log's parser): neither reaches
        // these files, and each test binary is linked again for every mutant.
        tests: &["--lib", "--test=tdx_quotes", "--test=tdx_hob_spec", "--test=tdx_forged"],
        slow_tests: &[],
        timeout_s: FAST_TIMEOUT_S,
    },
    // The DCAP verdict (PCK chain, collateral signatures, QE identity, TCB levels): the lib's
    // unit tests, the real quotes and collateral, the forged-evidence refusals.
    Group {
        name: "tdx-collateral",
        files: &["agent/src/tdx/collateral.rs"],
        re: None,
        tests: &["--lib", "--test=tdx_quotes", "--test=tdx_forged"],
        slow_tests: &[],
        timeout_s: FAST_TIMEOUT_S,
    },
    // The guest's TDCALL/TDVMCALL marshalling, against the lib's TDX module and VMM model.
    Group {
        name: "tdx-tdcall",
        files: &["agent/src/tdx/tdcall.rs"],
        re: None,
        tests: &["--lib"],
        slow_tests: &[],
        timeout_s: FAST_TIMEOUT_S,
    },
    Group {
        name: "xts",
        files: &["agent/src/xts/mod.rs", "agent/src/xts/soft.rs", "agent/src/xts/selftest.rs"],
        re: None,
        tests: &["--lib", "--test=xts_vectors", "--test=xts_oracle"],
        slow_tests: &[],
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
    let iterate = std::env::var("VEIL_MUTANTS_ITERATE").is_ok_and(|v| v == "1");
    // Absolute: cargo-mutants runs cargo in its copy of the tree, where a relative
    // CARGO_TARGET_DIR would name a fresh directory inside the copy (every dependency built
    // again, seen on 2026-12-07).
    let build_dir = std::env::var_os("VEIL_MUTANTS_BUILD")
        .filter(|dir| !dir.is_empty())
        .map(|dir| std::env::current_dir().map(|cwd| cwd.join(dir)))
        .transpose()?
        .unwrap_or_else(|| target_dir().join("mutants/build"));
    // $VEIL_MUTANTS_FILES (comma-separated file names, e.g. `verify.rs`): only those of the
    // group's files, as a run of their own (`GROUP-STEM`: output, BENCHMARKS section), so that a
    // file's survivors can be run again after new tests without the whole group.
    let only: Vec<String> = std::env::var("VEIL_MUTANTS_FILES")
        .map(|v| v.split(',').map(|f| f.trim().to_string()).filter(|f| !f.is_empty()).collect())
        .unwrap_or_default();
    let mut summaries = Vec::new();
    for g in GROUPS.iter().filter(|g| group.is_none_or(|want| want == g.name)) {
        let (name, files) = match subset(g, &only) {
            Ok(run) => run,
            // Every group in turn: those that do not hold the files named are not run.
            Err(_) if group.is_none() => continue,
            Err(e) => return Err(e),
        };
        let name = name.as_str();
        let out = target_dir().join("mutants").join(name);
        std::fs::create_dir_all(&out)?;
        let mut passes: Vec<(String, Pass)> = Vec::new();
        if iterate {
            if !out.join("mutants.out/caught.txt").exists() {
                bail!("VEIL_MUTANTS_ITERATE=1 needs an earlier run of {name} (target/mutants/{name}/mutants.out)");
            }
            // Without the record (a run by hand), the last run's lists are all there is.
            let earlier = match Pass::load(&out.join(RECORD)) {
                Ok(p) => p,
                Err(_) => Pass::read(&out.join("mutants.out"))?,
            };
            passes.push((String::from("earlier runs"), earlier));
        } else {
            // A previous (possibly interrupted) run's outcomes must not be counted again.
            let _ = std::fs::remove_dir_all(out.join("mutants.out"));
            let _ = std::fs::remove_file(out.join(RECORD));
        }
        let _ = std::fs::remove_dir_all(out.join("mutants.out.old"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(u64::from(minutes) * 60);
        let cargo_mutants = |tests: &[&str], iterate: bool| -> Result<()> {
            let left = deadline.saturating_duration_since(std::time::Instant::now()).as_secs().max(1);
            let mut cmd = Command::new("timeout");
            cmd.args(["--signal=INT", "--kill-after=60", &format!("{left}s"), "nice", "-n", "19", "cargo"])
                .current_dir(root())
                .env("CARGO_TARGET_DIR", &build_dir)
                .env("VEIL_TESTDATA", &testdata)
                .env("VEIL_REQUIRE_TESTDATA", "1")
                .env("VEIL_REQUIRE_TOOLS", "1")
                // The property tests see the same inputs for the baseline and every mutant: a
                // proptest cannot "catch" a mutant by drawing a case the baseline never drew.
                .env("PROPTEST_RNG_SEED", "1")
                .args(["mutants", "-j1", "--no-shuffle"])
                .args(["--timeout", &g.timeout_s.to_string(), "--build-timeout", &BUILD_TIMEOUT_S.to_string()])
                .arg("--output")
                .arg(&out);
            if iterate {
                cmd.arg("--iterate");
            }
            cmd.args(selection(&files, g.re));
            for t in tests {
                cmd.arg(format!("--cargo-arg={t}"));
            }
            eprintln!("xtask: mutants {name}: {cmd:?}");
            // cargo-mutants exits non-zero when a mutant survives; the outcomes say which.
            let started = std::time::SystemTime::now() - std::time::Duration::from_secs(2);
            let status = cmd.status().context("running cargo mutants")?;
            // An earlier run's mutants.out, left where cargo-mutants stopped before writing its
            // own, must not be read as this run's.
            let fresh = std::fs::metadata(out.join("mutants.out/mutants.json"))
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= started);
            if !fresh || !out.join("mutants.out/caught.txt").exists() {
                bail!("cargo mutants {name} ended with {status} and wrote no outcomes of its own");
            }
            Ok(())
        };
        let slow = g.slow_tests.join(" ");
        cargo_mutants(g.tests, iterate)?;
        let first = Pass::read(&out.join("mutants.out"))?;
        let first_label = if !g.slow_tests.is_empty() {
            format!("first pass, without {slow}")
        } else {
            String::from("this run (--iterate: only what the earlier runs did not catch)")
        };
        let mut note = String::new();
        if g.slow_tests.is_empty() {
            passes.push((first_label, first));
        } else if first.left_over() == 0 {
            note = format!("; no second pass with {slow}: the first caught every mutant");
            passes.push((first_label, first));
        } else if deadline.saturating_duration_since(std::time::Instant::now()).as_secs() < 120 {
            note = format!("; NO second pass with {slow}: the group's time limit was reached");
            passes.push((first_label, first));
        } else {
            let tests: Vec<&str> = g.tests.iter().chain(g.slow_tests).copied().collect();
            cargo_mutants(&tests, true)?;
            // cargo-mutants moved the first pass's outcomes to mutants.out.old.
            passes.push((first_label, Pass::read(&out.join("mutants.out.old"))?));
            let second = Pass::read(&out.join("mutants.out"))?;
            if second.tested.len() < second.found {
                note = format!(
                    "; the second pass was stopped by the time limit after {} of {}",
                    second.tested.len(),
                    second.found
                );
            }
            passes
                .push((format!("second pass, with {slow}, over the first pass's {} survivors", second.found), second));
        }
        if iterate {
            // Outcomes recorded under a name the source no longer has (an edit moved the
            // mutant's line) are another run's; count only the mutants the source has now.
            let current = current_mutants(&files, g.re)?;
            let mut stale = 0;
            for (_, p) in passes.iter_mut() {
                let before = p.tested.len();
                p.tested.retain(|(name, _)| current.contains(name));
                stale += before - p.tested.len();
            }
            passes[0].1.found = current.len();
            if stale > 0 {
                note.push_str(&format!(
                    "; {stale} outcomes of earlier runs dropped: the source has since moved those mutants"
                ));
            }
        }
        let merged: Vec<&Pass> = passes.iter().map(|(_, p)| p).collect();
        Pass::merge(&merged).save(&out.join(RECORD))?;
        let summary = format!("{}{note}", summarize(&passes));
        eprintln!("xtask: mutants {name}: {summary}");
        let missed = survivors(&merged).join("\n");
        let only_env =
            if files.len() < g.files.len() { format!("VEIL_MUTANTS_FILES={} ", only.join(",")) } else { String::new() };
        let mut body = format!(
            "### Mutation testing: {name}\n\nCommand: `{only_env}VEIL_MUTANTS_MINUTES={minutes} {}cargo xtask mutants {}` (cargo-mutants -j1 under \
             nice -n 19, {} s per mutant's tests; files {}; {}tests {}{}).\n\n{summary}.\n",
            if iterate { "VEIL_MUTANTS_ITERATE=1 " } else { "" },
            g.name,
            g.timeout_s,
            files.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", "),
            g.re.map(|r| format!("functions matching `{r}`; ")).unwrap_or_default(),
            g.tests.join(" "),
            if g.slow_tests.is_empty() {
                String::new()
            } else {
                format!(", and {} in a second pass over the first pass's survivors", g.slow_tests.join(" "))
            },
        );
        if !missed.is_empty() {
            body.push_str("\nSurvivors (explained under \"Mutation testing\" below, or to be killed):\n\n```\n");
            body.push_str(&missed);
            body.push_str("\n```\n");
        }
        crate::write_section(&format!("mutants-{name}"), &body)?;
        summaries.push(format!("{name}: {summary}"));
    }
    if summaries.is_empty() {
        match only.is_empty() {
            true => bail!("no mutants group named {group:?}"),
            false => bail!("no mutants group holds every file of VEIL_MUTANTS_FILES={only:?}"),
        }
    }
    eprintln!("xtask: mutants summary (survivors in target/mutants/GROUP/mutants.out/missed.txt):");
    for s in &summaries {
        eprintln!("  {s}");
    }
    Ok(())
}

/// The run's name and files: the whole group, or (`only` not empty) the group's files whose
/// name is one of `only`, named `GROUP-STEM` (every selected file's stem, joined by `-`).
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

/// The cargo-mutants arguments that pick a group's mutants: veil-agent's `files`, those
/// matching `re` if there is one. The same for a run and for `--list`.
fn selection(files: &[&str], re: Option<&str>) -> Vec<String> {
    let mut args = vec!["-p".to_string(), "veil-agent".to_string()];
    for f in files {
        args.extend(["--file".to_string(), f.to_string()]);
    }
    if let Some(re) = re {
        args.extend(["--re".to_string(), re.to_string()]);
    }
    args
}

/// The names of the mutants cargo-mutants finds in `files` now (`--list`, named as in its
/// outcome lists).
fn current_mutants(files: &[&str], re: Option<&str>) -> Result<std::collections::HashSet<String>> {
    let out = Command::new("cargo")
        .current_dir(root())
        .args(["mutants", "--list"])
        .args(selection(files, re))
        .output()
        .context("cargo mutants --list")?;
    if !out.status.success() {
        bail!("cargo mutants --list failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).map(String::from).collect())
}

/// The outcome lists cargo-mutants writes, in the order a summary gives them.
const OUTCOMES: [&str; 4] = ["caught", "missed", "timeout", "unviable"];

/// The group's record of every mutant's last outcome over all its runs (in
/// target/mutants/GROUP), which VEIL_MUTANTS_ITERATE=1 continues from.
const RECORD: &str = "outcomes.txt";

/// Outcomes of one cargo-mutants run, or the record of several.
struct Pass {
    /// (mutant name, index in `OUTCOMES`), in the order they were read.
    tested: Vec<(String, usize)>,
    /// How many mutants the run was to test.
    found: usize,
}

impl Pass {
    /// A run's outcomes, from the per-outcome lists cargo-mutants writes in its mutants.out
    /// (caught.txt, missed.txt, ...) and the list of every mutant it was to test (mutants.json).
    fn read(out: &Path) -> Result<Pass> {
        if !out.join("caught.txt").exists() {
            bail!("{} has no caught.txt", out.display());
        }
        let mut tested = Vec::new();
        for (i, k) in OUTCOMES.iter().enumerate() {
            let text = std::fs::read_to_string(out.join(format!("{k}.txt"))).unwrap_or_default();
            tested.extend(text.lines().filter(|l| !l.is_empty()).map(|l| (l.to_string(), i)));
        }
        let found = std::fs::read(out.join("mutants.json"))
            .ok()
            .and_then(|j| serde_json::from_slice::<Vec<serde_json::Value>>(&j).ok())
            .map_or(tested.len(), |all| all.len());
        Ok(Pass { tested, found })
    }

    /// A record written by `save`: "found N", then one "OUTCOME<TAB>name" line per mutant.
    fn load(path: &Path) -> Result<Pass> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut lines = text.lines();
        let found = lines
            .next()
            .and_then(|l| l.strip_prefix("found "))
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("{}: no `found N` line", path.display()))?;
        let mut tested = Vec::new();
        for l in lines.filter(|l| !l.is_empty()) {
            let (outcome, name) = l.split_once('\t').with_context(|| format!("{}: {l:?}", path.display()))?;
            let i =
                OUTCOMES.iter().position(|o| *o == outcome).with_context(|| format!("{}: {l:?}", path.display()))?;
            tested.push((name.to_string(), i));
        }
        Ok(Pass { tested, found })
    }

    fn save(&self, path: &Path) -> Result<()> {
        let mut text = format!("found {}\n", self.found);
        for (name, outcome) in &self.tested {
            text.push_str(&format!("{}\t{name}\n", OUTCOMES[*outcome]));
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Each mutant's last outcome over `passes` (a later pass tested again what an earlier
    /// one did not catch), in first-seen order; as many found as the first pass found.
    fn merge(passes: &[&Pass]) -> Pass {
        let mut tested: Vec<(String, usize)> = Vec::new();
        for pass in passes {
            for (name, outcome) in &pass.tested {
                match tested.iter_mut().find(|(n, _)| n == name) {
                    Some(m) => m.1 = *outcome,
                    None => tested.push((name.clone(), *outcome)),
                }
            }
        }
        let found = passes.first().map_or(0, |p| p.found).max(tested.len());
        Pass { tested, found }
    }

    fn count(&self, outcome: usize) -> usize {
        self.tested.iter().filter(|(_, o)| *o == outcome).count()
    }

    /// The mutants a later pass has to test: missed, timed out, or not tested at all.
    fn left_over(&self) -> usize {
        self.found.saturating_sub(self.count(0) + self.count(3))
    }
}

/// The names of the mutants whose last outcome is "missed".
fn survivors(passes: &[&Pass]) -> Vec<String> {
    Pass::merge(passes).tested.into_iter().filter(|(_, o)| *o == 1).map(|(n, _)| n).collect()
}

/// "N of TOTAL mutants tested: caught C, missed M, timeout T, unviable U; score C/(C+M+T) = P%",
/// each mutant counted once, by its last outcome over `passes` (TOTAL is what the first pass
/// found), so that a run the group's time limit cut short says so; with several passes, what
/// each one (its label) found.
fn summarize(passes: &[(String, Pass)]) -> String {
    let all = Pass::merge(&passes.iter().map(|(_, p)| p).collect::<Vec<_>>());
    let (caught, missed, timeout, unviable) = (all.count(0), all.count(1), all.count(2), all.count(3));
    let viable = caught + missed + timeout;
    let tested = viable + unviable;
    let found = all.found;
    let score = if viable == 0 { 0.0 } else { 100.0 * caught as f64 / viable as f64 };
    let untested = if tested < found {
        format!("; NOT TESTED: {} (the group's time limit stopped the run)", found - tested)
    } else {
        String::new()
    };
    let mut s = format!(
        "{tested} of {found} mutants tested: caught {caught}, missed {missed}, timeout {timeout}, unviable {unviable}; score {score:.0}% of those tested{untested}"
    );
    if passes.len() > 1 {
        let each: Vec<String> = passes
            .iter()
            .map(|(label, p)| {
                format!(
                    "{label}: caught {}, missed {}, timeout {}, unviable {}",
                    p.count(0),
                    p.count(1),
                    p.count(2),
                    p.count(3)
                )
            })
            .collect();
        s.push_str(&format!(" ({})", each.join("; ")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_lists(dir: &Path, lists: &[(&str, &[&str])]) {
        std::fs::create_dir_all(dir).unwrap();
        for (k, names) in lists {
            let text: String = names.iter().map(|n| format!("a.rs:{n}: replace x\n")).collect();
            std::fs::write(dir.join(format!("{k}.txt")), text).unwrap();
        }
    }

    #[test]
    fn the_summary_counts_each_outcome_list() {
        let dir = std::env::temp_dir().join(format!("veil-mutants-summary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(Pass::read(&dir).is_err(), "no outcome lists: no summary");
        write_lists(
            &dir,
            &[("caught", &["1", "2", "3"]), ("missed", &["4"]), ("timeout", &[]), ("unviable", &["5", "6"])],
        );
        let one = |p: Pass| [(String::from("only"), p)];
        assert_eq!(
            summarize(&one(Pass::read(&dir).unwrap())),
            "6 of 6 mutants tested: caught 3, missed 1, timeout 0, unviable 2; score 75% of those tested"
        );
        std::fs::write(dir.join("mutants.json"), format!("[{}{{}}]", "{},".repeat(9))).unwrap();
        let pass = Pass::read(&dir).unwrap();
        assert_eq!(pass.left_over(), 5, "the missed one and the four untested");
        assert_eq!(survivors(&[&pass]), ["a.rs:4: replace x"]);
        assert_eq!(
            summarize(&one(pass)),
            "6 of 10 mutants tested: caught 3, missed 1, timeout 0, unviable 2; score 75% of those tested; \
             NOT TESTED: 4 (the group's time limit stopped the run)"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A second pass (`--iterate`) tests again what the first did not catch: each mutant is
    /// counted once, by its last outcome, and the survivors are those the second pass missed;
    /// the record of both, saved and loaded, is the starting point of a later --iterate run.
    #[test]
    fn a_second_pass_supersedes_the_first_for_what_it_tested_again() {
        let dir = std::env::temp_dir().join(format!("veil-mutants-passes-{}", std::process::id()));
        let (old, new) = (dir.join("mutants.out.old"), dir.join("mutants.out"));
        write_lists(
            &old,
            &[("caught", &["1", "2"]), ("missed", &["3", "4", "5"]), ("timeout", &["6"]), ("unviable", &["7"])],
        );
        std::fs::write(old.join("mutants.json"), "[{},{},{},{},{},{},{},{}]").unwrap();
        write_lists(&new, &[("caught", &["3", "5"]), ("missed", &["4"]), ("timeout", &["6"]), ("unviable", &[])]);
        std::fs::write(new.join("mutants.json"), "[{},{},{},{},{}]").unwrap();
        let first = Pass::read(&old).unwrap();
        assert_eq!(first.left_over(), 5, "three missed, one timeout, one never tested");
        let passes = [(String::from("first"), first), (String::from("second"), Pass::read(&new).unwrap())];
        let summary = "7 of 8 mutants tested: caught 4, missed 1, timeout 1, unviable 1; score 67% of those tested; \
             NOT TESTED: 1 (the group's time limit stopped the run)";
        assert_eq!(
            summarize(&passes),
            format!(
                "{summary} (first: caught 2, missed 3, timeout 1, unviable 1; second: caught 2, missed 1, timeout 1, unviable 0)"
            )
        );
        assert_eq!(survivors(&[&passes[0].1, &passes[1].1]), ["a.rs:4: replace x"]);
        let record = dir.join(RECORD);
        Pass::merge(&[&passes[0].1, &passes[1].1]).save(&record).unwrap();
        let loaded = Pass::load(&record).unwrap();
        assert_eq!(summarize(&[(String::from("record"), loaded)]), summary);
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
            assert!(g.slow_tests.iter().all(|t| !g.tests.contains(t)), "{}: a slow test in both passes", g.name);
            for f in g.files {
                assert!(root().join(f).is_file(), "{}: {f}", g.name);
            }
        }
    }
}
