//! The repository is self-contained: no test, bench, script, CI step or packaging file refers to a
//! path outside it, so a fresh clone runs the whole suite.
//!
//! Every text file under `tests/`, `benches/`, `scripts/`, `.ci/` and `packaging/`, and
//! `Cargo.toml`, is scanned for path-like tokens (runs of letters, digits and `_ . - / ~`):
//! - a relative path with a `..` component must land on something that exists inside the
//!   repository, resolved either from the file's own folder (`#[path]`, `$(dirname "$0")/..`) or
//!   from the repository root (`CARGO_MANIFEST_DIR`, scripts that `cd` to the root);
//! - an absolute path may not start in a home or workspace folder ([`PRIVATE_ROOTS`]), and no
//!   path may start at a home folder's tilde.
//!
//! System paths a test legitimately uses (`/tmp`, `/proc`, `/usr/bin`, `/etc/metro`) are allowed.
//! The checker's own tests feed it planted references, so it is known to catch them.

use std::path::{Component, Path, PathBuf};

const SCANNED: [&str; 6] = [
    "tests",
    "benches",
    "scripts",
    ".ci",
    "packaging",
    "Cargo.toml",
];

/// First components of absolute paths that belong to a person or a workspace, never to the system.
const PRIVATE_ROOTS: [&str; 6] = ["home", "root", "work", "mnt", "media", "Users"];

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/' | '~')
}

/// `base` joined with `rel`, with `.` and `..` resolved lexically; `None` if it climbs above `/`.
fn resolve(base: &Path, rel: &str) -> Option<PathBuf> {
    let mut out = base.to_path_buf();
    for c in Path::new(rel).components() {
        let stays_below_root = match c {
            Component::ParentDir => out.pop(),
            Component::Normal(p) => {
                out.push(p);
                true
            }
            _ => true,
        };
        if !stays_below_root {
            return None;
        }
    }
    Some(out)
}

/// The references to paths outside `root` in `text`, the contents of `file` (inside `root`).
fn outside_references(root: &Path, file: &Path, text: &str) -> Vec<String> {
    let dir = file.parent().unwrap_or(root);
    let inside = |rel: &str, base: &Path| {
        resolve(base, rel).is_some_and(|p| p.starts_with(root) && p.exists())
    };
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let chars: Vec<(usize, char)> = line.char_indices().collect();
        let mut i = 0;
        while i < chars.len() {
            if !is_path_char(chars[i].1) {
                i += 1;
                continue;
            }
            let start = chars[i].0;
            let before = if i == 0 { ' ' } else { chars[i - 1].1 };
            while i < chars.len() && is_path_char(chars[i].1) {
                i += 1;
            }
            let end = chars.get(i).map_or(line.len(), |c| c.0);
            let token = &line[start..end];
            // `$(dirname "$0")/..` and `${dir}/x`: relative to a folder the shell computed.
            let continues_a_substitution = matches!(before, ')' | '}');
            let bad = if token.strip_prefix('~').is_some_and(|r| r.starts_with('/')) {
                true
            } else if let Some(abs) = token.strip_prefix('/') {
                if continues_a_substitution {
                    token.split('/').any(|c| c == "..") && !inside(abs, dir) && !inside(abs, root)
                } else {
                    let first = abs.split('/').next().unwrap_or("");
                    PRIVATE_ROOTS.contains(&first)
                }
            } else {
                token.split('/').any(|c| c == "..") && !inside(token, dir) && !inside(token, root)
            };
            if bad {
                let shown = file.strip_prefix(root).unwrap_or(file);
                found.push(format!("{}:{}: {token}", shown.display(), n + 1));
            }
        }
    }
    found
}

fn files_under(p: &Path, out: &mut Vec<PathBuf>) {
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            files_under(&e.unwrap().path(), out);
        }
    } else if p.is_file() {
        out.push(p.to_path_buf());
    }
}

#[test]
fn no_test_bench_script_or_package_file_refers_outside_the_repository() {
    let root = repo_root();
    let mut files = Vec::new();
    for s in SCANNED {
        files_under(&root.join(s), &mut files);
    }
    assert!(
        files.len() > 20,
        "expected the repository's tests and scripts, found {} files",
        files.len()
    );
    let mut found = Vec::new();
    for f in &files {
        // Binary files (none today) carry no paths a reader would follow.
        if let Ok(text) = std::fs::read_to_string(f) {
            found.extend(outside_references(&root, f, &text));
        }
    }
    assert!(
        found.is_empty(),
        "these refer to paths outside the repository; copy what they need into testdata/ (with its \
         licence and origin) and refer to it from there:\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn planted_outside_references_are_caught() {
    let root = repo_root();
    let test_file = root.join("tests/planted.rs");
    let script = root.join("scripts/planted");
    let up = "..";
    let planted = [
        (&test_file, format!("join(\"{up}/shared/corpus/tcpdump\")")),
        (&test_file, format!("join(\"{up}/{up}/elsewhere\")")),
        (&script, format!("cp /{}/x/y.pcap .", PRIVATE_ROOTS[2])),
        (&script, format!("cat /{}/me/notes", PRIVATE_ROOTS[0])),
        (&script, format!("cat {}/capture.pcap", '~')),
        (&script, format!("cd \"$(dirname \"$0\")/{up}/{up}/other\"")),
    ];
    for (file, line) in planted {
        assert_eq!(
            outside_references(&root, file, &line).len(),
            1,
            "not caught: {line}"
        );
    }
}

#[test]
fn references_inside_the_repository_and_system_paths_pass() {
    let root = repo_root();
    let bench = root.join("benches/planted.rs");
    let script = root.join("scripts/planted");
    let up = "..";
    let fine = [
        (
            &bench,
            format!("#[path = \"{up}/tests/support/traffic.rs\"]"),
        ),
        (
            &bench,
            format!("join(\"testdata/go-metro\"); &buf[{up}]; x[{up}n]"),
        ),
        (&script, format!("cd \"$(dirname \"$0\")/{up}\"")),
        (
            &script,
            "mktemp -d /tmp/x.XXXX; cat /proc/net/dev /usr/bin/metro".to_string(),
        ),
    ];
    for (file, line) in fine {
        assert_eq!(
            outside_references(&root, file, &line),
            Vec::<String>::new(),
            "wrongly flagged: {line}"
        );
    }
}
