//! Keeps the module layering of STYLE.md: arrows go one way. Reads every
//! `use crate::` / `crate::` path in `src/` and rejects forbidden edges.

use std::collections::BTreeSet;
use std::path::Path;

/// Top-level modules and the crate modules each may not depend on.
const FORBIDDEN: &[(&str, &[&str])] = &[
    // Leaf modules know no component.
    ("model", COMPONENTS),
    ("proto", COMPONENTS),
    ("chunk", COMPONENTS),
    ("tenant", COMPONENTS),
    ("metrics", COMPONENTS),
    ("service", COMPONENTS),
    ("logging", COMPONENTS),
    // Shared libraries never call the components that use them.
    (
        "ring",
        &[
            "distributor",
            "ingester",
            "querier",
            "frontend",
            "ruler",
            "store",
            "promql",
            "server",
            "app",
        ],
    ),
    (
        "limits",
        &[
            "distributor",
            "ingester",
            "querier",
            "frontend",
            "ruler",
            "server",
            "app",
        ],
    ),
    (
        "store",
        &[
            "ingester",
            "querier",
            "distributor",
            "frontend",
            "ruler",
            "server",
            "app",
        ],
    ),
    (
        "promql",
        &[
            "querier",
            "frontend",
            "ruler",
            "distributor",
            "ingester",
            "server",
            "app",
        ],
    ),
    // Components reach each other only along the write and read paths.
    (
        "distributor",
        &["querier", "frontend", "ruler", "store", "server", "app"],
    ),
    (
        "ingester",
        &[
            "distributor",
            "querier",
            "frontend",
            "ruler",
            "server",
            "app",
        ],
    ),
    (
        "querier",
        &["distributor", "frontend", "ruler", "server", "app"],
    ),
    (
        "frontend",
        &["distributor", "ingester", "ruler", "store", "server", "app"],
    ),
    ("ruler", &["ingester", "frontend", "store", "server", "app"]),
    ("server", &["app"]),
    // The config holds every component's config struct, but never the running app.
    ("config", &["app::App"]),
];

const COMPONENTS: &[&str] = &[
    "app",
    "config",
    "distributor",
    "ingester",
    "querier",
    "frontend",
    "ruler",
    "store",
    "promql",
    "server",
    "ring",
    "limits",
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().and_then(|e| e.to_str()) == Some("rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file under `src/` belongs to.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).expect("file under src");
    let first = relative
        .components()
        .next()
        .and_then(|c| c.as_os_str().to_str())
        .unwrap_or_default();
    first.trim_end_matches(".rs").to_string()
}

/// Every `crate::a::b` path mentioned in code lines (not comments).
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let tail = &rest[at + "crate::".len()..];
            let path: String = tail
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            paths.insert(path);
            rest = tail;
        }
    }
    paths
}

#[test]
fn module_dependencies_go_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 10, "src has the crate's modules");
    let mut violations = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        let Some((_, forbidden)) = FORBIDDEN.iter().find(|(m, _)| *m == module) else {
            continue;
        };
        let text = std::fs::read_to_string(file).expect("readable source");
        for path in crate_paths(&text) {
            for target in *forbidden {
                let hit = if target.contains("::") {
                    path.starts_with(target.trim_end_matches("::"))
                        && (target.ends_with("::") || path == *target)
                } else {
                    path == *target || path.starts_with(&format!("{target}::"))
                };
                if hit && !path.starts_with(&format!("{module}::")) {
                    violations.push(format!("{}: {module} -> crate::{path}", file.display()));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "forbidden dependencies:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_checker_sees_a_forbidden_edge() {
    let paths = crate_paths(
        "use crate::ingester::Ingester; // crate::app\nlet x = crate::ring::read::RingView::empty();",
    );
    assert!(paths.contains("ingester::Ingester"));
    assert!(paths.contains("ring::read::RingView::empty"));
    assert!(
        !paths.iter().any(|p| p.starts_with("app")),
        "comments are skipped"
    );
}
