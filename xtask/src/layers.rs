//! The crate layering of docs/architecture.md, checked against the workspace's real dependencies.

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
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
}
