//! The presets shipped with reg4rec: the TOML files of `configs/` (`smoke`, `cpu`, `gpu`), the one place a
//! preset is written. The CLI reads a whole file as its pipeline configuration; each crate's config reads its
//! own section (`[model]`, `[pretrain]`, `[align]`, `[sasrec]`, ...) through [`section`], so a library user
//! gets exactly the settings the pipeline runs. Fields a section leaves out keep their documented defaults.
//!
//! ```
//! #[derive(serde::Deserialize, Default)]
//! #[serde(default)]
//! struct Sasrec { max_len: usize, max_epochs: usize }
//! let cpu: Sasrec = reg4rec_data::presets::section("cpu", "sasrec")?;
//! assert_eq!((cpu.max_len, cpu.max_epochs), (50, 60));
//! # Ok::<(), reg4rec_data::DataError>(())
//! ```

use crate::error::{DataError, Result};
use serde::de::DeserializeOwned;

/// The presets by name, with their TOML text.
pub const PRESETS: [(&str, &str); 3] = [
    ("smoke", include_str!("../configs/smoke.toml")),
    ("cpu", include_str!("../configs/cpu.toml")),
    ("gpu", include_str!("../configs/gpu.toml")),
];

/// The TOML text of preset `name`.
pub fn text(name: &str) -> Result<&'static str> {
    PRESETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            DataError::config(
                "preset",
                format!(
                    "unknown preset `{name}`; known: {}",
                    PRESETS.map(|(n, _)| n).join(", ")
                ),
            )
        })
}

/// Section `section` of preset `name` as a config `T` (its fields left out keep `T`'s defaults: `T` should be
/// `#[serde(default)]`). A preset without the section gives `T` from an empty table.
pub fn section<T: DeserializeOwned>(name: &str, section: &str) -> Result<T> {
    let origin = format!("configs/{name}.toml");
    let table: toml::Table =
        toml::from_str(text(name)?).map_err(|e| DataError::invalid(&origin, e.to_string()))?;
    let part = match table.get(section) {
        Some(toml::Value::Table(t)) => t.clone(),
        Some(_) => {
            return Err(DataError::invalid(
                &origin,
                format!("`{section}` is not a table"),
            ))
        }
        None => toml::Table::new(),
    };
    toml::Value::Table(part)
        .try_into()
        .map_err(|e| DataError::invalid(&origin, format!("section `[{section}]`: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses_and_unknown_names_are_listed() {
        for (name, _) in PRESETS {
            let t: toml::Table = toml::from_str(text(name).unwrap()).unwrap();
            assert!(
                t.contains_key("model") && t.contains_key("sasrec"),
                "{name}"
            );
        }
        let e = text("laptop").unwrap_err().to_string();
        assert!(e.contains("laptop") && e.contains("smoke, cpu, gpu"), "{e}");
    }

    #[test]
    fn a_section_keeps_defaults_for_left_out_fields_and_names_bad_ones() {
        #[derive(serde::Deserialize, Default, Debug)]
        #[serde(default)]
        struct Part {
            d_model: usize,
            nothing: u8,
        }
        let p: Part = section("smoke", "model").unwrap();
        assert_eq!((p.d_model, p.nothing), (32, 0));
        #[derive(serde::Deserialize, Default, Debug)]
        #[serde(default, deny_unknown_fields)]
        struct Strict {
            d_model: usize,
        }
        let e = section::<Strict>("smoke", "model").unwrap_err().to_string();
        assert!(
            e.contains("configs/smoke.toml") && e.contains("[model]"),
            "{e}"
        );
        let none: Part = section("smoke", "no_such_section").unwrap();
        assert_eq!(none.d_model, 0);
    }
}
