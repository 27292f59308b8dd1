//! The crate layering of docs/architecture.md, checked against the workspace's real dependencies, and the CLI's
//! modules checked for import circles.

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// The `| layer | crates |` table of docs/architecture.md: crate name -> layer (`None` for tools, which may
    /// depend on any crate and on which none may depend).
    fn layers(doc: &str) -> BTreeMap<String, Option<u32>> {
        let table = doc
            .split("## Layers")
            .nth(1)
            .expect("docs/architecture.md has a `## Layers` section");
        let mut out = BTreeMap::new();
        for line in table
            .lines()
            .skip_while(|l| !l.starts_with("| layer"))
            .skip(2)
        {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if cells.len() < 4 {
                break;
            }
            let layer = match cells[1] {
                "tools" => None,
                n => Some(
                    n.parse()
                        .unwrap_or_else(|_| panic!("layer `{n}` is not a number")),
                ),
            };
            for name in cells[2].split(',').map(str::trim) {
                assert!(
                    out.insert(name.to_string(), layer).is_none(),
                    "{name} listed twice"
                );
            }
        }
        out
    }

    #[test]
    fn crates_depend_only_on_lower_layers() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
        let layers = layers(&doc);
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = std::process::Command::new(cargo)
            .args([
                "metadata",
                "--format-version",
                "1",
                "--no-deps",
                "--offline",
            ])
            .current_dir(&root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let packages = meta["packages"].as_array().unwrap();
        let mut broken = Vec::new();
        for p in packages {
            let name = p["name"].as_str().unwrap();
            let Some(&layer) = layers.get(name) else {
                broken.push(format!(
                    "{name} is not in the layer table of docs/architecture.md"
                ));
                continue;
            };
            for d in p["dependencies"].as_array().unwrap() {
                let dep = d["name"].as_str().unwrap();
                let Some(&dep_layer) = layers.get(dep) else {
                    continue; // not a workspace crate
                };
                let ok = match (layer, dep_layer) {
                    (_, None) => false,
                    (None, Some(_)) => true,
                    (Some(l), Some(dl)) => dl < l,
                };
                if !ok {
                    broken.push(format!(
                        "{name} (layer {layer:?}) depends on {dep} (layer {dep_layer:?})"
                    ));
                }
            }
        }
        assert!(broken.is_empty(), "{}", broken.join("\n"));
        // The table names only crates that exist.
        for name in layers.keys() {
            assert!(
                packages.iter().any(|p| p["name"] == name.as_str()),
                "docs/architecture.md lists {name}, which is not a workspace crate"
            );
        }
    }

    #[test]
    fn the_layer_table_parses() {
        let doc = "x\n## Layers\n\n| layer | crates |\n|---|---|\n| 0 | a |\n| 1 | b, c |\n| tools | t |\n\nafter |";
        let l = layers(doc);
        assert_eq!(l["a"], Some(0));
        assert_eq!(l["c"], Some(1));
        assert_eq!(l["t"], None);
        assert_eq!(l.len(), 4);
    }

    /// For each top-level module of a crate's `src` (a file, or a folder with its submodules), the other
    /// top-level modules its code names through `crate::<module>` (comments and the tests after `#[cfg(test)]`
    /// left out).
    fn module_imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
        fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    files(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        let mut all = Vec::new();
        files(src, &mut all);
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for f in all {
            let rel = f.strip_prefix(src).unwrap();
            let first = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            let module = first.trim_end_matches(".rs").to_string();
            let text = std::fs::read_to_string(&f).unwrap();
            // Code only: comments (doc links) and the test module at the end of a file import nothing.
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            let text: String = code
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            let entry = graph.entry(module.clone()).or_default();
            for (i, _) in text.match_indices("crate::") {
                let name: String = text[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    entry.insert(name);
                }
            }
        }
        graph
    }

    /// A circle of modules in `graph`, if there is one.
    fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
        fn visit(
            n: &str,
            graph: &BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(at) = path.iter().position(|p| p == n) {
                let mut c = path[at..].to_vec();
                c.push(n.to_string());
                return Some(c);
            }
            if done.contains(n) {
                return None;
            }
            path.push(n.to_string());
            for next in graph.get(n).into_iter().flatten() {
                if let Some(c) = visit(next, graph, path, done) {
                    return Some(c);
                }
            }
            path.pop();
            done.insert(n.to_string());
            None
        }
        let mut done = BTreeSet::new();
        graph
            .keys()
            .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
    }

    #[test]
    fn the_cli_modules_import_each_other_without_a_circle() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/reg4rec-cli/src");
        let graph = module_imports(&src);
        assert!(
            graph.contains_key("pipeline") && graph.contains_key("config"),
            "{graph:?}"
        );
        assert_eq!(circle(&graph), None, "{graph:?}");
    }

    /// Every crate of `crates/`: its source folder and its root file (`lib.rs`, else `main.rs`).
    fn crate_sources() -> Vec<(String, std::path::PathBuf, std::path::PathBuf)> {
        let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&crates).unwrap() {
            let dir = e.unwrap().path();
            let src = dir.join("src");
            let root = ["lib.rs", "main.rs"]
                .iter()
                .map(|f| src.join(f))
                .find(|p| p.is_file());
            if let Some(root) = root {
                let name = dir.file_name().unwrap().to_string_lossy().into_owned();
                out.push((name, src, root));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn no_crate_has_a_circle_of_modules() {
        let sources = crate_sources();
        assert!(sources.len() >= 10, "{sources:?}");
        let circles: Vec<String> = sources
            .iter()
            .filter_map(|(name, src, _)| {
                circle(&module_imports(src)).map(|c| format!("{name}: {}", c.join(" -> ")))
            })
            .collect();
        assert!(
            circles.is_empty(),
            "module circles:\n{}",
            circles.join("\n")
        );
    }

    #[test]
    fn every_crate_opens_with_its_doc() {
        let undocumented: Vec<String> = crate_sources()
            .into_iter()
            .filter(|(_, _, root)| {
                let text = std::fs::read_to_string(root).unwrap();
                !text.trim_start().starts_with("//!")
            })
            .map(|(name, ..)| name)
            .collect();
        assert!(
            undocumented.is_empty(),
            "crates whose root file does not open with a `//!` doc: {undocumented:?}"
        );
    }

    #[test]
    fn a_circle_is_found() {
        let g = |edges: &[(&str, &str)]| {
            let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (a, b) in edges {
                m.entry(a.to_string()).or_default().insert(b.to_string());
            }
            m
        };
        assert_eq!(circle(&g(&[("a", "b"), ("b", "c"), ("a", "c")])), None);
        assert_eq!(
            circle(&g(&[("a", "b"), ("b", "c"), ("c", "a")])),
            Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
        );
    }
}
