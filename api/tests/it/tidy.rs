//! Tidy: the rules ARCHITECTURE.md states as absences, checked over the source tree so
//! they stay true (after rust-analyzer's `tidy.rs`). Each test names the rule, walks the
//! files and lists every offender with the fix, so a failure says what to change.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The workspace root (this file is `api/tests/it/tidy.rs`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The workspace's member crates, from the root manifest.
fn members() -> Vec<String> {
    let text = fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    doc["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect()
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "target" && n != "fixtures") {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

/// The text before the file's first `#[cfg(test)]` (its shipped code), without comments.
fn shipped_code(text: &str) -> String {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    code.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn report(rule: &str, offenders: &[String]) {
    assert!(
        offenders.is_empty(),
        "{rule}; {} offender(s):\n  {}",
        offenders.len(),
        offenders.join("\n  ")
    );
}

#[test]
fn every_file_says_why_it_exists() {
    let mut bad = Vec::new();
    for m in members() {
        for f in rust_files(&root().join(&m)) {
            let text = fs::read_to_string(&f).unwrap();
            if !text.trim_start().starts_with("//!") {
                bad.push(rel(&f));
            }
        }
    }
    report("every .rs file starts with a //! module doc saying why it exists", &bad);
}

#[test]
fn the_engine_has_no_async_runtime() {
    let manifest = fs::read_to_string(root().join("engine/Cargo.toml")).unwrap();
    let doc: toml::Table = manifest.parse().unwrap();
    let mut bad = Vec::new();
    for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
        if let Some(t) = doc.get(section).and_then(|s| s.as_table()) {
            bad.extend(
                t.keys()
                    .filter(|k| k.starts_with("tokio"))
                    .map(|k| format!("[{section}] {k}")),
            );
        }
    }
    report(
        "engine/Cargo.toml names no tokio crate (the engine polls rings; async code lives in api/)",
        &bad,
    );
}

/// The one file allowed to start threads.
const SPAWN_FILE: &str = "engine/src/agent.rs";

#[test]
fn threads_start_only_through_the_spawn_function() {
    let mut bad = Vec::new();
    for m in members() {
        for f in rust_files(&root().join(&m).join("src")) {
            if rel(&f) == SPAWN_FILE {
                continue;
            }
            let code = shipped_code(&fs::read_to_string(&f).unwrap());
            for needle in ["thread::Builder", "thread::spawn", "thread::scope"] {
                if code.contains(needle) {
                    bad.push(format!(
                        "{}: {needle} (start it with stocksblitz_engine::agent)",
                        rel(&f)
                    ));
                }
            }
        }
    }
    report(&format!("threads are started only in {SPAWN_FILE}"), &bad);
}

/// A crate's root files: `src/lib.rs`, `src/main.rs`, `src/bin/*.rs`.
fn crate_roots(member: &str) -> Vec<PathBuf> {
    let src = root().join(member).join("src");
    let mut roots: Vec<PathBuf> = ["lib.rs", "main.rs"]
        .iter()
        .map(|f| src.join(f))
        .filter(|p| p.exists())
        .collect();
    if let Ok(bins) = fs::read_dir(src.join("bin")) {
        roots.extend(
            bins.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "rs")),
        );
    }
    roots.sort();
    roots
}

#[test]
fn no_crate_has_unsafe_code() {
    let mut bad = Vec::new();
    for m in members() {
        if UNSAFE_ALLOWED.contains(&m.as_str()) {
            continue;
        }
        for f in crate_roots(&m) {
            let text = fs::read_to_string(&f).unwrap();
            let forbids = text.lines().any(|l| {
                let l = l.trim();
                l == "#![forbid(unsafe_code)]" || l == "#![cfg_attr(not(test), forbid(unsafe_code))]"
            });
            if !forbids {
                bad.push(format!("{}: add #![forbid(unsafe_code)]", rel(&f)));
            }
        }
    }
    report("every crate root forbids unsafe code", &bad);
}

/// Crates whose root may leave out `#![forbid(unsafe_code)]` (the workspace's `deny`
/// still holds in the rest of them): the dev-only testkit, whose counting allocator
/// implements the unsafe trait `GlobalAlloc`, never a normal dependency (checked
/// below); and cache-hint, whose one audited block is the prefetch instruction
/// (checked below: exactly one).
const UNSAFE_ALLOWED: &[&str] = &["testkit", "cache-hint"];

/// The shipped exception stays one block: cache-hint's prefetch, and no other shipped
/// code opts out of the workspace's `deny(unsafe_code)` (tests may, e.g. for
/// `std::env::set_var`).
#[test]
fn the_only_shipped_unsafe_block_is_the_prefetch_hint() {
    let text = fs::read_to_string(root().join("cache-hint/src/lib.rs")).unwrap();
    let code: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.starts_with("//")).collect();
    let blocks = code
        .iter()
        .filter(|l| l.contains("unsafe {") || l.contains("unsafe{"))
        .count();
    let allows = code.iter().filter(|l| l.contains("allow(unsafe_code)")).count();
    let bad: Vec<String> = if blocks == 1 && allows == 1 && code.iter().any(|l| l.contains("_mm_prefetch")) {
        Vec::new()
    } else {
        vec![format!(
            "cache-hint/src/lib.rs: {blocks} unsafe blocks, {allows} allow(unsafe_code): exactly one of each, the prefetch"
        )]
    };
    report("the one shipped unsafe block is the prefetch hint", &bad);
    let others: Vec<String> = members()
        .iter()
        .filter(|m| m.as_str() != "cache-hint" && m.as_str() != "testkit")
        .flat_map(|m| rust_files(&root().join(m).join("src")))
        .filter(|f| {
            shipped_code(&fs::read_to_string(f).unwrap())
                .lines()
                .map(str::trim)
                .any(|l| {
                    (l.starts_with("#[") || l.starts_with("#![")) && l.contains("allow") && l.contains("unsafe_code")
                })
        })
        .map(|f| format!("{}: allow(unsafe_code) outside cache-hint and the testkit", rel(&f)))
        .collect();
    report("no other crate allows unsafe code", &others);
}

#[test]
fn the_testkit_is_a_dev_dependency_only() {
    let mut bad = Vec::new();
    for m in members() {
        let manifest: toml::Table = fs::read_to_string(root().join(&m).join("Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap();
        for section in ["dependencies", "build-dependencies"] {
            if manifest
                .get(section)
                .and_then(|s| s.as_table())
                .is_some_and(|t| t.contains_key("stocksblitz-testkit"))
            {
                bad.push(format!(
                    "{m}/Cargo.toml: stocksblitz-testkit in [{section}] (tests only: [dev-dependencies])"
                ));
            }
        }
    }
    report("the testkit (unsafe code, test helpers) is never shipped", &bad);
}

/// The integration-test binaries a crate may have (`tests/<name>.rs` or
/// `tests/<name>/main.rs`): `it`, and the API's soak, which scripts/soak.sh and
/// scripts/test.sh run alone, with its own settings, for minutes.
fn test_binary_allowed(member: &str, name: &str) -> bool {
    name == "it" || (member == "api" && name == "soak")
}

/// Offenders against one integration-test binary per crate in `member`'s `tests`
/// directory: another binary, or a file in `tests/it/` that `main.rs` does not declare
/// (such a file is never compiled, its tests never run).
fn test_layout_offenders(member: &str, tests: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    let entries = |d: &Path| {
        let mut v: Vec<PathBuf> = fs::read_dir(d)
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    let stem = |p: &Path| p.file_stem().and_then(|s| s.to_str()).unwrap_or("").to_owned();
    let is_rs = |p: &Path| p.extension().is_some_and(|x| x == "rs");
    for p in entries(tests) {
        let binary = if p.is_dir() {
            p.join("main.rs").exists()
        } else {
            is_rs(&p)
        };
        if binary && !test_binary_allowed(member, &stem(&p)) {
            bad.push(format!(
                "{}: a test binary of its own (make it a module of {member}/tests/it/main.rs)",
                rel(&p)
            ));
        }
    }
    let it = tests.join("it");
    let Ok(main) = fs::read_to_string(it.join("main.rs")) else {
        return bad;
    };
    for p in entries(&it) {
        let module = if p.is_dir() {
            p.join("mod.rs").exists().then(|| stem(&p))
        } else {
            (is_rs(&p) && stem(&p) != "main").then(|| stem(&p))
        };
        if let Some(module) = module {
            let declared = format!("mod {module};");
            if !main.lines().any(|l| l.trim() == declared) {
                bad.push(format!(
                    "{}: not declared in {member}/tests/it/main.rs (add `{declared}`, or it is never compiled)",
                    rel(&p)
                ));
            }
        }
    }
    bad
}

#[test]
fn integration_tests_are_one_binary_per_crate() {
    let mut bad = Vec::new();
    for m in members() {
        bad.extend(test_layout_offenders(&m, &root().join(&m).join("tests")));
    }
    report(
        "each crate's integration tests are one binary, tests/it/main.rs, declaring every file there",
        &bad,
    );
}

#[test]
fn the_test_layout_check_sees_strays() {
    let dir = std::env::temp_dir().join(format!("sbz-tidy-layout-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("it/helpers")).unwrap();
    fs::create_dir_all(dir.join("fixtures")).unwrap();
    for (f, text) in [
        ("it/main.rs", "//! m\nmod declared;\nmod helpers;\n"),
        ("it/declared.rs", "//! d\n"),
        ("it/forgotten.rs", "//! f\n"),
        ("it/helpers/mod.rs", "//! h\n"),
        ("stray.rs", "//! s\n"),
        ("soak.rs", "//! only the API's\n"),
        ("fixtures/data.json", "{}"),
    ] {
        fs::write(dir.join(f), text).unwrap();
    }
    let bad = test_layout_offenders("engine", &dir);
    let _ = fs::remove_dir_all(&dir);
    assert_eq!(bad.len(), 3, "{bad:?}");
    for name in ["soak.rs", "stray.rs", "forgotten.rs"] {
        assert!(bad.iter().any(|b| b.contains(name)), "{name} not reported: {bad:?}");
    }
    assert!(test_layout_offenders("api", &dir)
        .iter()
        .all(|b| !b.contains("soak.rs")));
}

#[test]
fn lints_are_configured_in_one_place() {
    let root_manifest: toml::Table = fs::read_to_string(root().join("Cargo.toml")).unwrap().parse().unwrap();
    let mut bad = Vec::new();
    if root_manifest["workspace"].get("lints").is_none() {
        bad.push("Cargo.toml: no [workspace.lints]".to_owned());
    }
    for m in members() {
        let manifest: toml::Table = fs::read_to_string(root().join(&m).join("Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap();
        let inherits = manifest
            .get("lints")
            .and_then(|l| l.get("workspace"))
            .and_then(|w| w.as_bool())
            == Some(true);
        if !inherits || manifest["lints"].as_table().is_some_and(|t| t.len() != 1) {
            bad.push(format!("{m}/Cargo.toml: [lints] must be exactly `workspace = true`"));
        }
        for f in crate_roots(&m) {
            for l in fs::read_to_string(&f).unwrap().lines() {
                let l = l.trim();
                let lint_attr = ["#![deny(", "#![warn(", "#![allow(", "#![cfg_attr(not(test), deny("]
                    .iter()
                    .any(|p| l.starts_with(p));
                if lint_attr {
                    bad.push(format!("{}: {l} (move it to [workspace.lints])", rel(&f)));
                }
            }
        }
    }
    report("lint levels are set in [workspace.lints] only", &bad);
}

/// `api/src`'s modules, one per file, as paths (`["http", "router"]`).
fn api_modules() -> BTreeMap<Vec<String>, PathBuf> {
    let src = root().join("api/src");
    let mut mods = BTreeMap::new();
    for f in rust_files(&src) {
        let relp = f.strip_prefix(&src).unwrap().with_extension("");
        let mut parts: Vec<String> = relp.iter().map(|c| c.to_string_lossy().into_owned()).collect();
        if parts.last().is_some_and(|l| l == "mod") {
            parts.pop();
        }
        if parts == ["lib"] || parts == ["main"] {
            continue;
        }
        mods.insert(parts, f);
    }
    mods
}

/// The module paths a file's shipped code names through `crate::` or `super::`.
fn named_paths(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for start in ["crate::", "super::"] {
        let mut i = 0;
        while let Some(pos) = code[i..].find(start) {
            let at = i + pos;
            i = at + start.len();
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_' || bytes[at - 1] == b':') {
                continue;
            }
            // `super` of `p/q.rs` (module p::q) and of `p/mod.rs` (module p) is the parent.
            let base: Vec<String> = if start == "crate::" {
                Vec::new()
            } else {
                module[..module.len().saturating_sub(1)].to_vec()
            };
            expand(base, &code[i..], &mut out);
        }
    }
    out
}

/// The paths of a use-tree starting at `s` (`a::b::C`, `a::{b::C, d}`), under `prefix`.
fn expand(mut prefix: Vec<String>, s: &str, out: &mut Vec<Vec<String>>) {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(s.len());
    prefix.extend(s[..end].split("::").filter(|x| !x.is_empty()).map(str::to_owned));
    let rest = &s[end..];
    if (end == 0 || s[..end].ends_with("::")) && rest.starts_with('{') {
        let close = matching_brace(rest).unwrap_or(rest.len());
        for item in split_top(&rest[1..close]) {
            expand(prefix.clone(), item, out);
        }
    } else {
        out.push(prefix);
    }
}

fn matching_brace(s: &str) -> Option<usize> {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

fn split_top(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(s[start..].trim());
    out.into_iter().filter(|x| !x.is_empty()).collect()
}

/// File-level import graph of `api/src`: module -> modules it names.
fn api_graph() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mods = api_modules();
    let mut graph = BTreeMap::new();
    for (m, f) in &mods {
        let code = shipped_code(&fs::read_to_string(f).unwrap());
        let mut targets = BTreeSet::new();
        for path in named_paths(&code, m) {
            // The longest prefix that is a module.
            if let Some(t) = (1..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|p| mods.contains_key(p))
            {
                if &t != m {
                    targets.insert(t);
                }
            }
        }
        graph.insert(m.clone(), targets);
    }
    graph
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on: BTreeSet<&'a Vec<String>>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a Vec<String>) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g.get(v).into_iter().flatten() {
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.join("::"));
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn the_api_crate_has_no_import_cycles() {
    let graph = api_graph();
    assert!(graph.len() > 50, "the walk found the modules ({})", graph.len());
    let found: Vec<String> = cycles(&graph).iter().map(|c| c.join(" <-> ")).collect();
    report(
        "no two modules of api/src import each other, directly or around a loop (move what both need into a lower module)",
        &found,
    );
}

#[test]
fn the_foundation_imports_nothing_above_it() {
    let graph = api_graph();
    let mut bad = Vec::new();
    for (m, targets) in &graph {
        if m.first().is_some_and(|f| f == "foundation") {
            for t in targets.iter().filter(|t| t.first().is_none_or(|f| f != "foundation")) {
                bad.push(format!("{} imports {}", m.join("::"), t.join("::")));
            }
        }
    }
    report("api/src/foundation uses nothing else in the crate", &bad);
}

/// The checker itself finds a cycle and a path through `use crate::{..}`.
#[test]
fn the_cycle_check_sees_cycles() {
    let m = |s: &str| s.split("::").map(str::to_owned).collect::<Vec<_>>();
    let mut g = BTreeMap::new();
    g.insert(m("a"), BTreeSet::from([m("b")]));
    g.insert(m("b"), BTreeSet::from([m("c::d")]));
    g.insert(m("c::d"), BTreeSet::from([m("a")]));
    g.insert(m("e"), BTreeSet::from([m("a")]));
    assert_eq!(
        cycles(&g),
        vec![vec!["a".to_owned(), "b".to_owned(), "c::d".to_owned()]]
    );
    let paths = named_paths(
        "use crate::{http::{error::ApiError, request_id}, state};\nuse super::x::Y;\nlet a = crate::z::f();",
        &m("p::q"),
    );
    assert!(paths.contains(&m("http::error::ApiError")), "{paths:?}");
    assert!(paths.contains(&m("http::request_id")), "{paths:?}");
    assert!(paths.contains(&m("state")), "{paths:?}");
    assert!(paths.contains(&m("p::x::Y")), "{paths:?}");
    assert!(paths.contains(&m("z::f")), "{paths:?}");
}
