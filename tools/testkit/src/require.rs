//! What a test needs from outside the project: the shared test corpus (`../shared/testdata`,
//! or `$VEIL_TESTDATA`) and tools the machine provides (cryptsetup, swtpm, tpm2-tools,
//! OpenSSL). One rule for every test: when something is absent the test says so loudly and
//! skips, unless `$VEIL_REQUIRE_TESTDATA` (corpus) or `$VEIL_REQUIRE_TOOLS` (tools) is set,
//! as CI sets both, and then absence is a failure. A test never decides that on its own.

use std::path::{Path, PathBuf};

/// The shared corpus's directory `sub`, or None after a loud skip; a failure (panic) when it is
/// absent and `$VEIL_REQUIRE_TESTDATA` is set.
pub fn testdata(sub: &str) -> Option<PathBuf> {
    let root = std::env::var_os("VEIL_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata"));
    let dir = root.join(sub);
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var_os("VEIL_REQUIRE_TESTDATA").is_some() {
        panic!("test corpus {} is missing and VEIL_REQUIRE_TESTDATA is set", dir.display());
    }
    eprintln!("\n!!! SKIPPED: test corpus {} is absent (set VEIL_TESTDATA) !!!\n", dir.display());
    None
}

/// `what` (a tool, or something a tool should have set up) is unavailable: None after a loud
/// skip; a failure (panic) when `$VEIL_REQUIRE_TOOLS` is set. `install` says how to get it.
pub fn missing_tool<T>(what: &str, install: &str) -> Option<T> {
    if std::env::var_os("VEIL_REQUIRE_TOOLS").is_some() {
        panic!("{what} is missing and VEIL_REQUIRE_TOOLS is set ({install})");
    }
    eprintln!("\n!!! SKIPPED: {what} is missing ({install}) !!!\n");
    None
}

/// Where the executable `name` is: on `$PATH`, or in /usr/sbin or /sbin (cryptsetup lives
/// there and a user's PATH may lack them).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The executable `name`, or None after [`missing_tool`]'s loud skip (or its failure under
/// `$VEIL_REQUIRE_TOOLS`).
pub fn tool(name: &str, install: &str) -> Option<PathBuf> {
    find_tool(name).or_else(|| missing_tool(name, install))
}

/// Every executable of `names`, or None after one loud skip (or failure) naming the missing.
pub fn tools(names: &[&str], install: &str) -> Option<Vec<PathBuf>> {
    let found: Vec<Option<PathBuf>> = names.iter().map(|n| find_tool(n)).collect();
    if found.iter().all(Option::is_some) {
        return Some(found.into_iter().flatten().collect());
    }
    let missing: Vec<&str> = names.iter().zip(&found).filter(|(_, f)| f.is_none()).map(|(n, _)| *n).collect();
    missing_tool(&missing.join(", "), install)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_tool_every_machine_has_and_not_one_none_has() {
        assert!(find_tool("sh").is_some());
        assert!(find_tool("veil-no-such-tool-anywhere").is_none());
    }
}
