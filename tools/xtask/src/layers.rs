//! The firmware's layer rule, checked by `cargo xtask lint`: every file in kernel/src names
//! (`crate::...`, `super::...`, `self::...`, a child module's path, an exported macro) only
//! files of its own layer or of the layers listed before its own in [`LAYERS`], and no files
//! name each other in a circle, inside a layer or across layers.
//!
//! The check reads the source text, not the compiler's view: comments and string literals are
//! skipped, `#[cfg]` is ignored (a path behind any feature counts), and a path resolves to the
//! longest module prefix that is a file (`crate::arch::cpu::port::route` names
//! kernel/src/arch/cpu.rs). Names brought in by `use` are counted at the `use`, which is where
//! every path to another file starts.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// The layers of kernel/src, lowest first: the first segment of a module's path (`""` is the
/// crate root, lib.rs). A layer may name only itself and the layers before it.
pub const LAYERS: &[(&str, &str)] = &[
    ("arch", "the CPU: instructions, paging, exceptions, console, timeline, exit"),
    ("error", "BootError, the one error type"),
    ("devices", "fw_cfg, ACPI tables, PCI, MMIO, virtio-blk and the relay console"),
    ("platform", "plain, SEV-SNP, TDX and their roots of trust (TPM, AMD-SP, TDX module)"),
    ("boot", "the boot stages: heap, key source, disk boot, state disk, secrets, Linux"),
    ("model", "test ROMs only: the SNP and TDX models under TCG, hand-off audit"),
    ("testhooks", "test ROMs only: the faults and substitutions QEMU tests ask for"),
    ("", "lib.rs: veil_main, the stages in order"),
];

/// One file's reference to another that the rule forbids.
#[derive(Debug, PartialEq, Eq)]
pub enum Violation {
    /// A file names a file of a higher layer.
    Upward { from: String, to: String, line: usize, path: String },
    /// Files that name each other in a circle (each names the next, the last the first);
    /// `component` is every file tied into circles with them.
    Circle { files: Vec<String>, component: Vec<String> },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Upward { from, to, line, path } => {
                write!(f, "{from}:{line}: `{path}` names {to}, a higher layer")
            }
            Violation::Circle { files, component } => {
                write!(f, "import circle: {} -> {}", files.join(" -> "), files[0])?;
                if component.len() > files.len() {
                    write!(f, " (one of the circles among {})", component.join(", "))?;
                }
                Ok(())
            }
        }
    }
}

/// Check the tree under `src` (kernel/src); every violation is an error.
pub fn check_tree(src: &Path) -> Result<()> {
    let mut files = Vec::new();
    collect(src, src, &mut files)?;
    let violations = check(&files);
    if violations.is_empty() {
        return Ok(());
    }
    for v in &violations {
        eprintln!("layers: {v}");
    }
    let order: Vec<&str> = LAYERS.iter().map(|(name, _)| if name.is_empty() { "lib.rs" } else { name }).collect();
    bail!(
        "{} layer violation(s) in {} (allowed order, lowest first: {}; tools/xtask/src/layers.rs)",
        violations.len(),
        src.display(),
        order.join(" < ")
    )
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))?.collect();
    entries.sort_by_key(|e| e.as_ref().map(|e| e.path()).ok());
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            collect(root, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root)?.to_string_lossy().replace('\\', "/");
            // main.rs is the binary that links the library; it is no module of it.
            if rel != "main.rs" {
                out.push((rel, std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?));
            }
        }
    }
    Ok(())
}

/// The module path of a file relative to the crate's src/ (`platform/snp/mod.rs` -> platform::snp).
fn module_of(rel: &str) -> Vec<String> {
    let trimmed = rel.strip_suffix(".rs").unwrap_or(rel);
    let mut segs: Vec<String> = trimmed.split('/').map(str::to_owned).collect();
    if segs.last().is_some_and(|s| s == "mod" || s == "lib") {
        segs.pop();
    }
    segs
}

fn layer_rank(module: &[String]) -> Option<usize> {
    let first = module.first().map(String::as_str).unwrap_or("");
    LAYERS.iter().position(|(name, _)| *name == first)
}

/// The violations among `files` (path relative to src/, text).
pub fn check(files: &[(String, String)]) -> Vec<Violation> {
    let modules: BTreeMap<Vec<String>, &str> = files.iter().map(|(rel, _)| (module_of(rel), rel.as_str())).collect();
    let tokenized: Vec<(&str, Vec<Token>)> = files.iter().map(|(rel, text)| (rel.as_str(), tokens(text))).collect();
    let macros = exported_macros(&tokenized);
    let mut violations = Vec::new();
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (rel, toks) in &tokenized {
        let module = module_of(rel);
        let rank = layer_rank(&module);
        for (line, path) in references(&module, toks, &macros) {
            let Some(target) = file_of(&modules, &path, &macros) else { continue };
            if target == *rel {
                continue;
            }
            edges.entry(rel).or_default().insert(target);
            let target_rank = layer_rank(&module_of(target));
            let upward = match (rank, target_rank) {
                (Some(r), Some(t)) => t > r,
                // A folder the table does not list is a layer nobody may name, and that may
                // name nothing: the table has to say where it sits.
                _ => true,
            };
            if upward {
                let from = rel.to_string();
                let to = target.to_string();
                violations.push(Violation::Upward { from, to, line, path: path.join("::") });
            }
        }
    }
    for component in circles(&edges) {
        let files = shortest_circle(&edges, &component).into_iter().map(str::to_owned).collect();
        violations.push(Violation::Circle { files, component: component.into_iter().map(str::to_owned).collect() });
    }
    violations
}

/// The file a resolved path names: the longest prefix that is a file's module, or the file
/// that exports the macro a root path names.
fn file_of<'a>(
    modules: &BTreeMap<Vec<String>, &'a str>,
    path: &[String],
    macros: &BTreeMap<String, &'a str>,
) -> Option<&'a str> {
    if path.len() == 1
        && let Some(file) = macros.get(&path[0])
    {
        return Some(file);
    }
    (0..=path.len()).rev().find_map(|n| modules.get(&path[..n]).copied())
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    PathSep,
    Punct(char),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
}

/// Identifiers, `::` and single punctuation, with comments, strings and character literals
/// dropped (so a doc comment's `crate::x` is no reference).
fn tokens(text: &str) -> Vec<Token> {
    let b: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if b[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || (next == Some('#') && raw_string_start(&b, i + 1))) {
            // r"..." or r#"..."#: ends at the quote followed by as many hashes.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            j += 1;
            while j < b.len() {
                if b[j] == '"' && (1..=hashes).all(|k| b.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                if b[j] == '\n' {
                    line += 1;
                }
                j += 1;
            }
            i = j;
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                if b.get(i) == Some(&'\n') {
                    line += 1;
                }
                i += 1;
            }
            i += 1;
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{..}'), else a lifetime or label ('a).
            if next == Some('\\') {
                i += 3;
                while i < b.len() && b[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if b.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
                while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                    i += 1;
                }
            }
        } else if c == '$' || c.is_alphabetic() || c == '_' {
            let start = i;
            i += 1;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            let word: String = b[start..i].iter().collect();
            let word = word.strip_prefix("r#").map(str::to_owned).unwrap_or(word);
            out.push(Token { tok: Tok::Ident(word), line });
        } else if c == ':' && next == Some(':') {
            out.push(Token { tok: Tok::PathSep, line });
            i += 2;
        } else if c.is_whitespace() || c.is_ascii_digit() {
            i += 1;
        } else {
            out.push(Token { tok: Tok::Punct(c), line });
            i += 1;
        }
    }
    out
}

fn raw_string_start(b: &[char], mut i: usize) -> bool {
    while b.get(i) == Some(&'#') {
        i += 1;
    }
    b.get(i) == Some(&'"')
}

fn ident(toks: &[Token], i: usize) -> Option<&str> {
    match toks.get(i).map(|t| &t.tok) {
        Some(Tok::Ident(s)) => Some(s),
        _ => None,
    }
}

fn punct(toks: &[Token], i: usize, c: char) -> bool {
    toks.get(i).is_some_and(|t| t.tok == Tok::Punct(c))
}

fn path_sep(toks: &[Token], i: usize) -> bool {
    toks.get(i).is_some_and(|t| t.tok == Tok::PathSep)
}

/// `#[macro_export] macro_rules! name` across the files: name -> the file that defines it.
fn exported_macros<'a>(files: &[(&'a str, Vec<Token>)]) -> BTreeMap<String, &'a str> {
    let mut out = BTreeMap::new();
    for (rel, toks) in files {
        let mut exported = false;
        for i in 0..toks.len() {
            match ident(toks, i) {
                Some("macro_export") => exported = true,
                Some("macro_rules") if punct(toks, i + 1, '!') => {
                    if exported && let Some(name) = ident(toks, i + 2) {
                        out.insert(name.to_owned(), *rel);
                    }
                    exported = false;
                }
                _ => {}
            }
        }
    }
    out
}

/// Every path the file's tokens name, resolved from the crate root, with its line. Inline
/// `mod name { .. }` blocks move `self` and `super` as the compiler does.
fn references(module: &[String], toks: &[Token], macros: &BTreeMap<String, &str>) -> Vec<(usize, Vec<String>)> {
    let children: BTreeSet<&str> =
        (0..toks.len()).filter(|&i| ident(toks, i) == Some("mod")).filter_map(|i| ident(toks, i + 1)).collect();
    let mut out = Vec::new();
    // The inline module stack: (name, brace depth at which it closes).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        if punct(toks, i, '{') {
            depth += 1;
        } else if punct(toks, i, '}') {
            depth = depth.saturating_sub(1);
            if inline.last().is_some_and(|(_, d)| *d == depth) {
                inline.pop();
            }
        }
        if ident(toks, i) == Some("mod")
            && let Some(name) = ident(toks, i + 1)
            && punct(toks, i + 2, '{')
        {
            inline.push((name.to_owned(), depth));
            i += 1;
            continue;
        }
        let after_sep = i > 0 && path_sep(toks, i - 1);
        let Some(first) = ident(toks, i) else {
            i += 1;
            continue;
        };
        let here: Vec<String> = module.iter().cloned().chain(inline.iter().map(|(n, _)| n.clone())).collect();
        if !after_sep
            && punct(toks, i + 1, '!')
            && !matches!(i.checked_sub(1).and_then(|p| ident(toks, p)), Some("macro_rules"))
        {
            if macros.contains_key(first) {
                out.push((toks[i].line, vec![first.to_owned()]));
            }
            i += 1;
            continue;
        }
        let base: Option<Vec<String>> = match first {
            _ if after_sep || !path_sep(toks, i + 1) => None,
            "crate" | "$crate" => Some(Vec::new()),
            "self" => Some(here.clone()),
            "super" => {
                let mut b = here.clone();
                b.pop();
                Some(b)
            }
            child if children.contains(child) => Some(here.iter().cloned().chain([child.to_owned()]).collect()),
            _ => None,
        };
        let Some(mut base) = base else {
            i += 1;
            continue;
        };
        let line = toks[i].line;
        let mut j = i + 2;
        // Further `super::` steps.
        while ident(toks, j) == Some("super") && path_sep(toks, j + 1) {
            base.pop();
            j += 2;
        }
        let (paths, end) = path_tree(toks, j);
        for p in paths {
            let mut full = base.clone();
            full.extend(p);
            out.push((line, full));
        }
        i = end.max(i + 1);
    }
    out
}

/// The paths of a (use) tree starting at `i`: `a::b`, `a::{b, c::d}`, `a::*`, `{self, x}`.
/// Returns the paths (relative to where the tree starts) and the index after it.
fn path_tree(toks: &[Token], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    loop {
        if punct(toks, i, '{') {
            let mut paths = Vec::new();
            i += 1;
            while i < toks.len() && !punct(toks, i, '}') {
                if punct(toks, i, ',') {
                    i += 1;
                    continue;
                }
                let (inner, end) = path_tree(toks, i);
                for p in inner {
                    let mut full = prefix.clone();
                    full.extend(p);
                    paths.push(full);
                }
                // Skip what follows a member (`as name`) up to the next `,` or `}`.
                i = end;
                while i < toks.len() && !punct(toks, i, ',') && !punct(toks, i, '}') {
                    i += 1;
                }
            }
            return (paths, i + 1);
        }
        match ident(toks, i) {
            Some("self") if prefix.is_empty() || !path_sep(toks, i + 1) => i += 1,
            Some(seg) => {
                prefix.push(seg.to_owned());
                i += 1;
            }
            None => {
                // `*` or nothing: the tree ends with what it has.
                if punct(toks, i, '*') {
                    i += 1;
                }
                return (vec![prefix], i);
            }
        }
        if path_sep(toks, i) {
            i += 1;
        } else {
            return (vec![prefix], i);
        }
    }
}

/// The import circles of a file graph: its strongly connected components of more than one
/// file (Tarjan), each listed from its smallest name along a circle through all its files
/// where one exists as found.
fn circles<'a>(edges: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Vec<Vec<&'a str>> {
    struct Tarjan<'a, 'e> {
        edges: &'e BTreeMap<&'a str, BTreeSet<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<&'a str>>,
    }
    impl<'a> Tarjan<'a, '_> {
        fn visit(&mut self, v: &'a str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on_stack.insert(v);
            for &w in self.edges.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.out.push(component);
                }
            }
        }
    }
    let mut t = Tarjan {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    let nodes: BTreeSet<&str> =
        edges.iter().flat_map(|(k, vs)| std::iter::once(*k).chain(vs.iter().copied())).collect();
    for v in nodes {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.out
}

/// The shortest circle through the first file of `component` (breadth first, inside it).
fn shortest_circle<'a>(edges: &BTreeMap<&'a str, BTreeSet<&'a str>>, component: &[&'a str]) -> Vec<&'a str> {
    let start = component[0];
    let inside: BTreeSet<&str> = component.iter().copied().collect();
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in edges.get(v).into_iter().flatten() {
            if w == start {
                let mut path = vec![v];
                while let Some(&p) = came_from.get(path.last().expect("non-empty")) {
                    path.push(p);
                }
                path.reverse();
                return path;
            }
            if inside.contains(w) && !came_from.contains_key(w) && w != start {
                came_from.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    component.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> Vec<Violation> {
        let owned: Vec<(String, String)> = files.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect();
        check(&owned)
    }

    /// A small tree that keeps the rule: every kind of path the checker reads, all downward.
    const CLEAN: &[(&str, &str)] = &[
        (
            "lib.rs",
            "pub mod arch; pub mod devices; pub mod boot;\nuse arch::{cpu, serial};\nfn f() { boot::go(); log!(\"x\"); }",
        ),
        ("arch/mod.rs", "pub mod cpu; pub mod serial;"),
        ("arch/cpu.rs", "pub fn rdtsc() -> u64 { 0 }\nmod port { use super::rdtsc; }"),
        (
            "arch/serial.rs",
            "use crate::arch::cpu;\n#[macro_export]\nmacro_rules! log { ($($a:tt)*) => { $crate::arch::serial::line() } }",
        ),
        ("devices/mod.rs", "pub mod fwcfg;"),
        (
            "devices/fwcfg.rs",
            "use crate::arch::{self, cpu::{rdtsc as t}};\n// crate::boot::go is named in a comment\nconst S: &str = \"crate::boot::x\";\nfn f() { log!(\"fw_cfg\"); }",
        ),
        ("boot/mod.rs", "pub fn go() { crate::devices::fwcfg::f(); super::arch::cpu::rdtsc(); }"),
    ];

    #[test]
    fn a_tree_that_keeps_the_rule_passes() {
        assert_eq!(tree(CLEAN), vec![]);
    }

    #[test]
    fn an_upward_path_is_caught_in_each_spelling() {
        for (spelling, line) in [
            ("fn g() { crate::boot::go(); }", "crate::boot::go"),
            ("use crate::{boot::go};", "boot::go"),
            ("use super::super::boot;", "boot"),
        ] {
            let mut files = CLEAN.to_vec();
            files.push(("arch/extra.rs", spelling));
            let v = tree(&files);
            assert!(
                v.iter().any(|v| matches!(v, Violation::Upward { from, to, .. } if from == "arch/extra.rs" && to == "boot/mod.rs")),
                "{spelling} ({line}): {v:?}"
            );
        }
    }

    #[test]
    fn a_macro_from_a_higher_layer_is_caught() {
        let mut files = CLEAN.to_vec();
        files.push(("boot/stage.rs", "#[macro_export]\nmacro_rules! stage { () => {} }"));
        files.push(("devices/pci.rs", "fn f() { stage!(); }"));
        let v = tree(&files);
        assert!(
            v.iter().any(
                |v| matches!(v, Violation::Upward { from, to, .. } if from == "devices/pci.rs" && to == "boot/stage.rs")
            ),
            "{v:?}"
        );
    }

    #[test]
    fn a_circle_inside_one_layer_is_caught() {
        let mut files = CLEAN.to_vec();
        files.push(("devices/a.rs", "use crate::devices::b::B;"));
        files.push(("devices/b.rs", "fn f() { crate::devices::c::g(); }"));
        files.push(("devices/c.rs", "use super::a;"));
        let v = tree(&files);
        assert_eq!(
            v,
            vec![Violation::Circle {
                files: vec!["devices/a.rs".into(), "devices/b.rs".into(), "devices/c.rs".into()],
                component: vec!["devices/a.rs".into(), "devices/b.rs".into(), "devices/c.rs".into()],
            }]
        );
    }

    #[test]
    fn a_parent_and_child_naming_each_other_is_a_circle() {
        let mut files = CLEAN.to_vec();
        files.push(("devices/virtio/mod.rs", "pub mod blk; fn f() { blk::g(); }"));
        files.push(("devices/virtio/blk.rs", "use super::Hal;"));
        let v = tree(&files);
        assert_eq!(
            v,
            vec![Violation::Circle {
                files: vec!["devices/virtio/blk.rs".into(), "devices/virtio/mod.rs".into()],
                component: vec!["devices/virtio/blk.rs".into(), "devices/virtio/mod.rs".into()],
            }]
        );
    }

    #[test]
    fn a_folder_the_table_does_not_list_is_refused() {
        let mut files = CLEAN.to_vec();
        files.push(("misc/mod.rs", "use crate::arch::cpu;"));
        assert!(tree(&files).iter().any(|v| matches!(v, Violation::Upward { from, .. } if from == "misc/mod.rs")));
    }

    #[test]
    fn the_kernel_keeps_the_rule() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernel/src");
        check_tree(&src).unwrap();
    }
}
