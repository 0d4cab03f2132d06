//! The dependency direction the code keeps, checked so it cannot quietly come back.
//!
//! Crates are layered: each may depend only on crates of lower layers. Inside the broker crate,
//! the partition layer (a partition, its Raft replica, its producer state, its ISR rules, its
//! tiering, its config) never reaches up into the broker, the cluster, the group coordinator
//! or the request handlers: those compose it, not the other way round.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).expect("crates/<name> sits two levels below the repository").to_path_buf()
}

/// Workspace crates by layer, lowest first.
const CRATE_LAYERS: &[&[&str]] = &[
    &["sediment-protocol", "sediment-telemetry", "sediment-lazyfs"],
    &["sediment-log"],
    &["sediment-raft", "sediment-tier"],
    &["sediment-broker", "sediment-client"],
    &["sediment"],
];

fn layer_of(name: &str) -> Option<usize> {
    CRATE_LAYERS.iter().position(|l| l.contains(&name))
}

/// The workspace crates a Cargo.toml names in its [dependencies] (not dev-dependencies: tests
/// may reach anywhere).
fn sediment_deps(manifest: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_deps = false;
    for line in manifest.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_deps = t == "[dependencies]";
            continue;
        }
        if in_deps
            && let Some(name) = t.split(['.', '=', ' ']).next()
            && name.starts_with("sediment")
        {
            out.insert(name.to_string());
        }
    }
    out
}

#[test]
fn crates_depend_only_on_lower_layers() {
    let crates = repo().join("crates");
    let mut seen = 0;
    let mut bad = Vec::new();
    for entry in std::fs::read_dir(&crates).unwrap() {
        let dir = entry.unwrap().path();
        let Ok(manifest) = std::fs::read_to_string(dir.join("Cargo.toml")) else { continue };
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let Some(mine) = layer_of(&name) else {
            bad.push(format!("{name} is in no layer: add it to CRATE_LAYERS"));
            continue;
        };
        seen += 1;
        for dep in sediment_deps(&manifest) {
            match layer_of(&dep) {
                Some(l) if l < mine => {}
                Some(_) => bad.push(format!("{name} depends on {dep}, which is not below it")),
                None => bad.push(format!("{name} depends on {dep}, which is in no layer")),
            }
        }
    }
    assert!(seen >= 8, "found only {seen} crates under {}", crates.display());
    assert!(bad.is_empty(), "crate layering broken:\n{}", bad.join("\n"));
}

/// Modules of the broker crate that form the partition layer.
const PARTITION_LAYER: &[&str] = &["partition", "replica", "producer_state", "isr", "tiering", "topic_config", "descriptors", "error"];
/// Modules above it.
const ABOVE: &[&str] = &["broker", "cluster", "group", "handlers", "server", "migrate", "observe", "metadata", "topic_rules"];

/// The `crate::` modules a source file names outside its tests (`crate::x::...` and
/// `use crate::{x, y::z}`).
fn crate_modules(src: &str) -> BTreeSet<String> {
    let code = src.split("#[cfg(test)]").next().unwrap_or(src);
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let m: String = item.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if !m.is_empty() {
                    out.insert(m);
                }
            }
        } else {
            let m: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            out.insert(m);
        }
    }
    out
}

/// The sources of module `m`: `m.rs`, or every `.rs` file under `m/`.
fn module_sources(src: &Path, m: &str) -> Vec<(String, String)> {
    let file = src.join(format!("{m}.rs"));
    if file.exists() {
        return vec![(format!("{m}.rs"), std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{m}.rs: {e}")))];
    }
    let dir = src.join(m);
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{m}: neither {m}.rs nor {m}/: {e}"))
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "rs"))
        .map(|e| (format!("{m}/{}", e.file_name().to_string_lossy()), std::fs::read_to_string(e.path()).unwrap()))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "{m}/ holds no source");
    out
}

#[test]
fn the_partition_layer_does_not_reach_up() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut bad = Vec::new();
    for m in PARTITION_LAYER {
        for (file, text) in module_sources(&src, m) {
            for used in crate_modules(&text) {
                if ABOVE.contains(&used.as_str()) {
                    bad.push(format!("{file} uses crate::{used}"));
                }
            }
        }
    }
    assert!(bad.is_empty(), "the partition layer reaches up:\n{}", bad.join("\n"));
}

#[test]
fn the_module_scanner_sees_both_forms() {
    let found = crate_modules("use crate::{broker::Broker, partition};\nfn f() { crate::cluster::x(); }\n#[cfg(test)]\nuse crate::server;");
    assert_eq!(found, ["broker", "cluster", "partition"].iter().map(|s| s.to_string()).collect());
}
