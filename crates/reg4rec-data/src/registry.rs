//! Named datasets with checksummed public sources, and the loader that finds them.
//!
//! | name | files | source |
//! |---|---|---|
//! | `ml-100k` (default) | `ml-100k.inter`, `ml-100k.item`, `ml-100k.user` | the `recbole==1.2.1` wheel on PyPI, `recbole/dataset_example/ml-100k/` |
//! | `amazon-beauty` | `Beauty.txt`, `Beauty_item2attributes.json` (+ optional extras) | GitHub aHuiWang/CIKM2020-S3Rec `data/` |
//! | `amazon-sports` | `Sports_and_Outdoors.txt`, `Sports_and_Outdoors_item2attributes.json` | same |
//! | `amazon-toys` | `Toys_and_Games.txt`, `Toys_and_Games_item2attributes.json` | same |
//!
//! **Resolution order** for `load(name, opts)`: (1) the mirror `<data_dir>/<name>/<original file names>` when
//! all required files are there; (2) the cache `<cache_dir>/<name>/`; (3) a download into the cache (when
//! `opts.download`). Every file the registry lists is checked against its sha256 wherever it is found (a
//! mismatch is an error naming the file, never a silent fallback); other files in the folder are ignored,
//! optional files (e.g. Beauty's `_item2l1category.tsv`) are used and checked when present.
//!
//! Downloads: ml-100k runs `<python> -m pip download recbole==1.2.1 --no-deps --only-binary=:all: -d
//! <cache>/downloads` (python: `$REG4REC_PYTHON`, else `<workspace>/.venv/bin/python` when it exists, else
//! `python3`), then extracts the atomic files from the wheel with the `zip` crate. The Amazon sets are fetched
//! with `curl -fsSL` from `raw.githubusercontent.com`. Everything is verified before it is written (atomically).
//!
//! Defaults ([`LoadOptions::default`]): `data_dir` = `$REG4REC_DATA_DIR`, else `<workspace>/../shared/data` when
//! that folder exists; `cache_dir` = `$REG4REC_CACHE_DIR`, else `<workspace>/data-cache` (git-ignored), where
//! `<workspace>` is the nearest ancestor of the current directory whose `Cargo.toml` has a `[workspace]`
//! section, else the workspace this crate was built in, else the current directory.
//!
//! Your own logs: [`load_path`] reads RecBole atomic files or a CSV (see [`crate::formats`]).

use crate::dataset::{Dataset, KCoreReport};
use crate::error::{DataError, Result};
use crate::formats::{self, S3RecFiles};
use crate::io::{sha256_bytes, verify_sha256, write_atomic};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The dataset used when none is named.
pub const DEFAULT_DATASET: &str = "ml-100k";

/// One file of a registered dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceFile {
    /// Original file name (also its name in the mirror and the cache).
    pub name: &'static str,
    /// Hex sha256 of the file's bytes.
    pub sha256: &'static str,
    /// Required files must exist; optional ones are used (and checked) when present in a mirror.
    pub required: bool,
}

/// Where a dataset's files come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Members of a Python wheel downloaded with pip.
    PypiWheel {
        /// pip requirement, e.g. `recbole==1.2.1`.
        requirement: &'static str,
        /// File name of the wheel pip saves.
        wheel: &'static str,
        /// sha256 of the wheel.
        wheel_sha256: &'static str,
        /// Folder of the files inside the wheel.
        member_dir: &'static str,
        /// Public page of the wheel.
        page: &'static str,
    },
    /// Plain files under a base URL (fetched with curl).
    Http { base_url: &'static str },
}

/// How the files are parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// RecBole atomic files `<stem>.inter` and `<stem>.item`.
    Atomic { stem: &'static str },
    /// S3-Rec `<stem>.txt`, `<stem>_item2attributes.json` and optional extras.
    S3Rec { stem: &'static str },
}

/// A registered dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatasetSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub format: Format,
    pub source: Source,
    pub files: &'static [SourceFile],
}

impl DatasetSpec {
    /// Public URL (or wheel page and member) of a file.
    pub fn url(&self, file: &str) -> String {
        match self.source {
            Source::PypiWheel {
                page, member_dir, ..
            } => format!("{page} (wheel member {member_dir}/{file})"),
            Source::Http { base_url } => format!("{base_url}/{file}"),
        }
    }
}

const S3REC_RAW: &str = "https://raw.githubusercontent.com/aHuiWang/CIKM2020-S3Rec/master/data";

const fn req(name: &'static str, sha256: &'static str) -> SourceFile {
    SourceFile {
        name,
        sha256,
        required: true,
    }
}

const fn opt(name: &'static str, sha256: &'static str) -> SourceFile {
    SourceFile {
        name,
        sha256,
        required: false,
    }
}

static SPECS: &[DatasetSpec] = &[
    DatasetSpec {
        name: "ml-100k",
        description: "MovieLens 100K (RecBole atomic files); category = first genre; attributes: title words, release year, genres",
        format: Format::Atomic { stem: "ml-100k" },
        source: Source::PypiWheel {
            requirement: "recbole==1.2.1",
            wheel: "recbole-1.2.1-py3-none-any.whl",
            wheel_sha256: "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
            member_dir: "recbole/dataset_example/ml-100k",
            page: "https://pypi.org/project/recbole/1.2.1/",
        },
        files: &[
            req("ml-100k.inter", "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"),
            req("ml-100k.item", "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532"),
            req("ml-100k.user", "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972"),
        ],
    },
    DatasetSpec {
        name: "amazon-beauty",
        description: "Amazon Beauty 2014, 5-core, S3-Rec preprocessing; category = top-level category",
        format: Format::S3Rec { stem: "Beauty" },
        source: Source::Http { base_url: S3REC_RAW },
        files: &[
            req("Beauty.txt", "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8"),
            req("Beauty_item2attributes.json", "129e40f67486f6877eff0f5318cfa8530ee8ac23d8b0d1de04e1bb7a2ba0b2d4"),
            opt("Beauty_attribute_names.json", "d828abc33148b09e76263ac5761bb6ed74ab3e0ab494fd71cd45ce0ed0a52557"),
            opt("Beauty_item2l1category.tsv", "bf075199961758ce913b9457f626b646c15b8eabcf75e935545752131f475b69"),
        ],
    },
    DatasetSpec {
        name: "amazon-sports",
        description: "Amazon Sports and Outdoors 2014, 5-core, S3-Rec preprocessing; category derived from attributes",
        format: Format::S3Rec { stem: "Sports_and_Outdoors" },
        source: Source::Http { base_url: S3REC_RAW },
        files: &[
            req("Sports_and_Outdoors.txt", "2a095e0648872beb9982408958290f5d655db5be2911c3756b5446de9f0b8de2"),
            req(
                "Sports_and_Outdoors_item2attributes.json",
                "7fb10733ac4f1811384a52144cdefa7fcc7536fa80a7232c5da9bd789155c34b",
            ),
        ],
    },
    DatasetSpec {
        name: "amazon-toys",
        description: "Amazon Toys and Games 2014, 5-core, S3-Rec preprocessing; category derived from attributes",
        format: Format::S3Rec { stem: "Toys_and_Games" },
        source: Source::Http { base_url: S3REC_RAW },
        files: &[
            req("Toys_and_Games.txt", "176c680c688d497598c4a89a03b402c0fe78d795e5db335c2e78dd5f2d778a3f"),
            req(
                "Toys_and_Games_item2attributes.json",
                "d371acd25101eedac04afc727626464b7acec770c4eda708705d51eb76eb1ad0",
            ),
        ],
    },
];

/// Every registered dataset.
pub fn specs() -> &'static [DatasetSpec] {
    SPECS
}

/// The names of the registered datasets.
pub fn names() -> Vec<&'static str> {
    SPECS.iter().map(|s| s.name).collect()
}

/// Looks a dataset up by name.
pub fn spec(name: &str) -> Result<&'static DatasetSpec> {
    SPECS
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| DataError::UnknownDataset {
            name: name.to_string(),
            known: names().join(", "),
        })
}

/// Where to look for data and what to do when it is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Mirror holding `<data_dir>/<dataset>/<original file names>`; searched first.
    /// Default: `$REG4REC_DATA_DIR`, else `<workspace>/../shared/data` if it exists.
    pub data_dir: Option<PathBuf>,
    /// Download cache (`<cache_dir>/<dataset>/`). Default: `$REG4REC_CACHE_DIR`, else `<workspace>/data-cache`.
    pub cache_dir: PathBuf,
    /// Download missing datasets into the cache. Default: true.
    pub download: bool,
    /// Keep only the k-core (users and items with at least k interactions). Default: none.
    pub k_core: Option<usize>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        let root = workspace_root();
        let data_dir = env_path("REG4REC_DATA_DIR").or_else(|| {
            let p = root.join("..").join("shared").join("data");
            p.is_dir().then_some(p)
        });
        let cache_dir = env_path("REG4REC_CACHE_DIR").unwrap_or_else(|| root.join("data-cache"));
        LoadOptions {
            data_dir,
            cache_dir,
            download: true,
            k_core: None,
        }
    }
}

impl LoadOptions {
    /// Checks the options, naming the bad field.
    pub fn validate(&self) -> Result<()> {
        if self.k_core == Some(0) {
            return Err(DataError::config("k_core", "must be at least 1 when set"));
        }
        Ok(())
    }
}

/// The mirror folder of `dataset`, for tests and benches that use real benchmark data.
///
/// `Ok(Some(dir))` when `<data_dir>/<dataset>` exists; `Ok(None)` when `$REG4REC_DATA_DIR` is unset and the
/// default folder has no such dataset (the caller skips, saying so); an error when `$REG4REC_DATA_DIR` is set
/// but does not hold it, because whoever set it (CI does) says the data is there, and a test that then passed
/// without reading it would prove nothing.
pub fn benchmark_mirror(dataset: &str) -> Result<Option<PathBuf>> {
    let named = env_path("REG4REC_DATA_DIR");
    let data_dir = named.clone().or(LoadOptions::default().data_dir);
    match data_dir.map(|d| d.join(dataset)) {
        Some(dir) if dir.is_dir() => Ok(Some(dir)),
        Some(dir) if named.is_some() => Err(DataError::NotFound {
            name: dataset.to_string(),
            message: format!(
                "REG4REC_DATA_DIR is set, but {} is not a folder (unset it to skip the tests that need it)",
                dir.display()
            ),
        }),
        _ => Ok(None),
    }
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The workspace root (see the module doc).
pub fn workspace_root() -> PathBuf {
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            let toml = dir.join("Cargo.toml");
            if std::fs::read_to_string(&toml).is_ok_and(|t| t.contains("[workspace]")) {
                return dir.to_path_buf();
            }
        }
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("..");
    if built.join("Cargo.toml").is_file() {
        return built;
    }
    PathBuf::from(".")
}

/// Where a dataset's files were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Mirror,
    Cache,
    Download,
    /// A user-supplied path ([`load_path`]).
    User,
}

/// What loading did, for logs and reports.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LoadReport {
    /// Folder the files were read from.
    pub dir: PathBuf,
    pub origin: Origin,
    /// The k-core filter's removals, when one was applied.
    pub k_core: Option<KCoreReport>,
}

/// Loads a registered dataset (see the module doc for the resolution order).
pub fn load(name: &str, opts: &LoadOptions) -> Result<Dataset> {
    load_with_report(name, opts).map(|(d, _)| d)
}

/// Like [`load`], also saying where the files came from and what the k-core filter dropped.
pub fn load_with_report(name: &str, opts: &LoadOptions) -> Result<(Dataset, LoadReport)> {
    load_spec(spec(name)?, opts)
}

/// Loads the dataset described by `spec` (registered or not).
pub fn load_spec(spec: &DatasetSpec, opts: &LoadOptions) -> Result<(Dataset, LoadReport)> {
    opts.validate()?;
    let (dir, origin) = resolve(spec, opts)?;
    let ds = parse(spec, &dir)?;
    let (ds, k_core) = apply_k_core(ds, opts.k_core)?;
    Ok((
        ds,
        LoadReport {
            dir,
            origin,
            k_core,
        },
    ))
}

/// The k-core of `ds` when `k` is given; an error naming `k_core` when it removes every user.
fn apply_k_core(ds: Dataset, k: Option<usize>) -> Result<(Dataset, Option<KCoreReport>)> {
    match k {
        Some(k) => {
            let (users, items) = (ds.n_users(), ds.n_items());
            let (d, r) = ds.k_core(k);
            if d.n_users() == 0 {
                return Err(DataError::config(
                    "k_core",
                    format!(
                        "the {k}-core of `{}` is empty: no user and item keep {k} interactions each \
                         ({users} users and {items} items before); choose a smaller k",
                        d.name
                    ),
                ));
            }
            Ok((d, Some(r)))
        }
        None => Ok((ds, None)),
    }
}

/// Finds (or fetches) a folder holding the dataset's verified files.
pub fn resolve(spec: &DatasetSpec, opts: &LoadOptions) -> Result<(PathBuf, Origin)> {
    let mut looked = Vec::new();
    if let Some(d) = &opts.data_dir {
        let dir = d.join(spec.name);
        if has_required(spec, &dir) {
            verify_dir(spec, &dir)?;
            return Ok((dir, Origin::Mirror));
        }
        looked.push(dir);
    }
    let cache = opts.cache_dir.join(spec.name);
    if has_required(spec, &cache) {
        verify_dir(spec, &cache)?;
        return Ok((cache, Origin::Cache));
    }
    looked.push(cache.clone());
    if !opts.download {
        return Err(DataError::NotFound {
            name: spec.name.to_string(),
            message: format!(
                "looked in {}; set REG4REC_DATA_DIR to a folder holding {}/ or allow downloads",
                looked
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                spec.name
            ),
        });
    }
    fetch(spec, &opts.cache_dir)?;
    verify_dir(spec, &cache)?;
    Ok((cache, Origin::Download))
}

fn has_required(spec: &DatasetSpec, dir: &Path) -> bool {
    spec.files
        .iter()
        .filter(|f| f.required)
        .all(|f| dir.join(f.name).is_file())
}

/// Verifies every listed file present in `dir` (required ones must be present).
fn verify_dir(spec: &DatasetSpec, dir: &Path) -> Result<()> {
    for f in spec.files {
        let p = dir.join(f.name);
        if f.required || p.is_file() {
            verify_sha256(&p, f.sha256)?;
        }
    }
    Ok(())
}

fn parse(spec: &DatasetSpec, dir: &Path) -> Result<Dataset> {
    match spec.format {
        Format::Atomic { stem } => {
            let item = dir.join(format!("{stem}.item"));
            formats::load_atomic(
                spec.name,
                &dir.join(format!("{stem}.inter")),
                item.is_file().then_some(item.as_path()),
            )
        }
        Format::S3Rec { stem } => {
            let p = |suffix: &str| dir.join(format!("{stem}{suffix}"));
            let present = |p: PathBuf| p.is_file().then_some(p);
            let (seq, attrs, names, l1) = (
                p(".txt"),
                present(p("_item2attributes.json")),
                present(p("_attribute_names.json")),
                present(p("_item2l1category.tsv")),
            );
            formats::load_s3rec(
                spec.name,
                &S3RecFiles {
                    sequences: &seq,
                    attributes: attrs.as_deref(),
                    attribute_names: names.as_deref(),
                    l1_categories: l1.as_deref(),
                },
            )
        }
    }
}

/// The Python interpreter used for pip (see the module doc).
pub fn python() -> PathBuf {
    if let Some(p) = env_path("REG4REC_PYTHON") {
        return p;
    }
    let venv = workspace_root().join(".venv").join("bin").join("python");
    if venv.is_file() {
        return venv;
    }
    PathBuf::from("python3")
}

/// Downloads the dataset's required files into `<cache_dir>/<name>/`, verifying each before writing it.
pub fn fetch(spec: &DatasetSpec, cache_dir: &Path) -> Result<()> {
    let out = cache_dir.join(spec.name);
    match spec.source {
        Source::PypiWheel {
            requirement,
            wheel,
            wheel_sha256,
            member_dir,
            ..
        } => {
            let dl = cache_dir.join("downloads");
            let wheel_path = dl.join(wheel);
            if !wheel_path.is_file() || verify_sha256(&wheel_path, wheel_sha256).is_err() {
                std::fs::create_dir_all(&dl).map_err(|e| DataError::io(&dl, e))?;
                let py = python();
                let mut cmd = Command::new(&py);
                cmd.args([
                    "-m",
                    "pip",
                    "download",
                    requirement,
                    "--no-deps",
                    "--only-binary=:all:",
                    "-d",
                ])
                .arg(&dl)
                .args(["--disable-pip-version-check", "--quiet"]);
                run_download(
                    cmd,
                    &format!("{requirement} (with {} -m pip)", py.display()),
                )?;
            }
            verify_sha256(&wheel_path, wheel_sha256)?;
            extract_wheel_members(spec, &wheel_path, member_dir, &out)
        }
        Source::Http { base_url } => {
            for f in spec.files.iter().filter(|f| f.required) {
                let url = format!("{base_url}/{}", f.name);
                let mut cmd = Command::new("curl");
                cmd.args(["-fsSL", "--retry", "2", &url]);
                let bytes = run_download(cmd, &url)?;
                write_verified(&out.join(f.name), &bytes, f.sha256)?;
            }
            Ok(())
        }
    }
}

/// Runs a download command and returns its stdout; failure to start or a non-zero exit is an error.
fn run_download(mut cmd: Command, what: &str) -> Result<Vec<u8>> {
    let output = cmd.output().map_err(|e| DataError::Download {
        what: what.to_string(),
        message: format!("cannot run {:?}: {e}", cmd.get_program()),
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(DataError::Download {
            what: what.to_string(),
            message: format!("{} ({})", stderr.trim(), output.status),
        });
    }
    Ok(output.stdout)
}

fn write_verified(path: &Path, bytes: &[u8], expected: &str) -> Result<()> {
    let found = sha256_bytes(bytes);
    if found != expected {
        return Err(DataError::Checksum {
            path: path.to_path_buf(),
            expected: expected.to_string(),
            found,
        });
    }
    write_atomic(path, bytes)
}

/// Extracts the spec's files from `member_dir/` of a wheel (zip) into `out`.
fn extract_wheel_members(
    spec: &DatasetSpec,
    wheel: &Path,
    member_dir: &str,
    out: &Path,
) -> Result<()> {
    let file = std::fs::File::open(wheel).map_err(|e| DataError::io(wheel, e))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| DataError::invalid(wheel, format!("not a readable zip archive: {e}")))?;
    for f in spec.files {
        let member = format!("{member_dir}/{}", f.name);
        let mut entry = zip
            .by_name(&member)
            .map_err(|e| DataError::invalid(wheel, format!("wheel has no member {member}: {e}")))?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes)
            .map_err(|e| DataError::invalid(wheel, format!("cannot extract {member}: {e}")))?;
        write_verified(&out.join(f.name), &bytes, f.sha256)?;
    }
    Ok(())
}

/// Loads your own data: a RecBole `.inter` file (with the sibling `.item` when present), a folder holding one
/// `.inter`, a `.csv` or `.parquet` log, or an S3-Rec `.txt` (with its sibling `_item2attributes.json` etc. when present).
/// The dataset is named after the file stem; `opts.k_core` applies.
pub fn load_path(path: &Path, opts: &LoadOptions) -> Result<Dataset> {
    load_path_with_report(path, opts).map(|(d, _)| d)
}

/// Like [`load_path`], also reporting what the k-core filter dropped.
pub fn load_path_with_report(path: &Path, opts: &LoadOptions) -> Result<(Dataset, LoadReport)> {
    opts.validate()?;
    let path = if path.is_dir() {
        single_inter(path)?
    } else {
        path.to_path_buf()
    };
    if !path.is_file() {
        return Err(DataError::io(
            &path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        ));
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "custom".to_string());
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let sibling = |suffix: &str| {
        let p = path.with_file_name(format!("{stem}{suffix}"));
        p.is_file().then_some(p)
    };
    let ds =
        match ext.as_str() {
            "inter" => formats::load_atomic(&stem, &path, sibling(".item").as_deref())?,
            "csv" => formats::load_csv(&stem, &path)?,
            #[cfg(feature = "parquet")]
            "parquet" | "pq" => formats::load_parquet(&stem, &path)?,
            "txt" => {
                let (a, n, l) = (
                    sibling("_item2attributes.json"),
                    sibling("_attribute_names.json"),
                    sibling("_item2l1category.tsv"),
                );
                formats::load_s3rec(
                    &stem,
                    &S3RecFiles {
                        sequences: &path,
                        attributes: a.as_deref(),
                        attribute_names: n.as_deref(),
                        l1_categories: l.as_deref(),
                    },
                )?
            }
            _ => return Err(DataError::invalid(
                &path,
                "unknown format: expected a .inter (RecBole), .csv, .parquet or .txt (S3-Rec) file",
            )),
        };
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let (ds, k_core) = apply_k_core(ds, opts.k_core)?;
    Ok((
        ds,
        LoadReport {
            dir,
            origin: Origin::User,
            k_core,
        },
    ))
}

fn single_inter(dir: &Path) -> Result<PathBuf> {
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut inters: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "inter"))
        .collect();
    match inters.len() {
        1 => Ok(inters.remove(0)),
        0 => Err(DataError::invalid(dir, "folder holds no .inter file")),
        n => Err(DataError::invalid(
            dir,
            format!("folder holds {n} .inter files; name one"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(data_dir: Option<&Path>, cache: &Path, download: bool) -> LoadOptions {
        LoadOptions {
            data_dir: data_dir.map(Path::to_path_buf),
            cache_dir: cache.to_path_buf(),
            download,
            k_core: None,
        }
    }

    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }

    /// A tiny S3-Rec dataset spec whose files live (or are served) under `src`.
    fn tiny_spec(src: &Path) -> DatasetSpec {
        let seq = "1 1 2 3\n2 2 3 1\n3 3 1 2 4\n";
        let attrs = r#"{"1": [10, 20], "2": [10], "3": [11], "4": [11, 21]}"#;
        std::fs::write(src.join("T.txt"), seq).unwrap();
        std::fs::write(src.join("T_item2attributes.json"), attrs).unwrap();
        let files: &'static [SourceFile] = Box::leak(Box::new([
            req("T.txt", leak(sha256_bytes(seq.as_bytes()))),
            req(
                "T_item2attributes.json",
                leak(sha256_bytes(attrs.as_bytes())),
            ),
            opt("T_item2l1category.tsv", "0000"),
        ]));
        DatasetSpec {
            name: "tiny",
            description: "test",
            format: Format::S3Rec { stem: "T" },
            source: Source::Http {
                base_url: leak(format!("file://{}", src.display())),
            },
            files,
        }
    }

    #[test]
    fn registry_knows_every_dataset_and_rejects_unknown_names() {
        assert_eq!(
            names(),
            vec!["ml-100k", "amazon-beauty", "amazon-sports", "amazon-toys"]
        );
        assert_eq!(DEFAULT_DATASET, names()[0]);
        for s in specs() {
            assert!(s.files.iter().all(|f| f.sha256.len() == 64), "{}", s.name);
            assert!(s.url(s.files[0].name).starts_with("https://"));
        }
        let e = load("nope", &LoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope") && e.contains("ml-100k"), "{e}");
    }

    #[test]
    fn mirror_first_then_cache_then_download() {
        let src = tempfile::tempdir().unwrap();
        let spec = tiny_spec(src.path());
        let cache = tempfile::tempdir().unwrap();
        // Nothing anywhere, no download: a clear error saying where it looked.
        let e = load_spec(&spec, &opts(None, cache.path(), false))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tiny") && e.contains("looked in"), "{e}");
        // Download (curl over file://) fills the cache.
        let (ds, r) = load_spec(&spec, &opts(None, cache.path(), true)).unwrap();
        assert_eq!(r.origin, Origin::Download);
        assert_eq!(
            (ds.n_users(), ds.n_items(), ds.n_interactions()),
            (3, 4, 10)
        );
        assert!(cache.path().join("tiny/T.txt").is_file());
        // Second time: the cache, even with downloads off.
        let (_, r) = load_spec(&spec, &opts(None, cache.path(), false)).unwrap();
        assert_eq!(r.origin, Origin::Cache);
        // A mirror wins over the cache; extra files there are fine.
        let mirror = tempfile::tempdir().unwrap();
        let m = mirror.path().join("tiny");
        std::fs::create_dir_all(&m).unwrap();
        for f in ["T.txt", "T_item2attributes.json"] {
            std::fs::copy(src.path().join(f), m.join(f)).unwrap();
        }
        std::fs::write(m.join("README.md"), "extra").unwrap();
        let (_, r) = load_spec(&spec, &opts(Some(mirror.path()), cache.path(), false)).unwrap();
        assert_eq!((r.origin, r.dir), (Origin::Mirror, m.clone()));
        // An optional file that is present is checked too.
        std::fs::write(
            m.join("T_item2l1category.tsv"),
            "item_id\tl1_attr_id\tl1_name\n",
        )
        .unwrap();
        let e = load_spec(&spec, &opts(Some(mirror.path()), cache.path(), false)).unwrap_err();
        assert!(matches!(e, DataError::Checksum { .. }), "{e}");
    }

    #[test]
    fn checksum_mismatch_in_mirror_is_an_error_naming_the_file() {
        let src = tempfile::tempdir().unwrap();
        let spec = tiny_spec(src.path());
        let mirror = tempfile::tempdir().unwrap();
        let m = mirror.path().join("tiny");
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(m.join("T.txt"), "1 1 2 3\n").unwrap();
        std::fs::copy(
            src.path().join("T_item2attributes.json"),
            m.join("T_item2attributes.json"),
        )
        .unwrap();
        let cache = tempfile::tempdir().unwrap();
        let e = load_spec(&spec, &opts(Some(mirror.path()), cache.path(), true))
            .unwrap_err()
            .to_string();
        assert!(e.contains("T.txt") && e.contains("sha256 mismatch"), "{e}");
    }

    #[test]
    fn failed_download_is_a_clear_error() {
        let src = tempfile::tempdir().unwrap();
        let mut spec = tiny_spec(src.path());
        spec.source = Source::Http {
            base_url: leak(format!("file://{}/nowhere", src.path().display())),
        };
        let cache = tempfile::tempdir().unwrap();
        let e = load_spec(&spec, &opts(None, cache.path(), true))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("download of file://") && e.contains("T.txt"),
            "{e}"
        );
        // A served file with the wrong content is refused before it is written.
        std::fs::create_dir_all(src.path().join("bad")).unwrap();
        std::fs::write(src.path().join("bad/T.txt"), "1 9 9 9\n").unwrap();
        spec.source = Source::Http {
            base_url: leak(format!("file://{}/bad", src.path().display())),
        };
        let e = load_spec(&spec, &opts(None, cache.path(), true)).unwrap_err();
        assert!(matches!(e, DataError::Checksum { .. }), "{e}");
        assert!(!cache.path().join("tiny/T.txt").exists());
    }

    #[test]
    fn wheel_members_are_extracted_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("w.whl");
        let inter = "user_id:token\titem_id:token\ttimestamp:float\n1\t1\t1\n1\t2\t2\n1\t3\t3\n";
        {
            let f = std::fs::File::create(&wheel).unwrap();
            let mut z = zip::ZipWriter::new(f);
            z.start_file("pkg/data/x.inter", zip::write::SimpleFileOptions::default())
                .unwrap();
            std::io::Write::write_all(&mut z, inter.as_bytes()).unwrap();
            z.finish().unwrap();
        }
        let files: &'static [SourceFile] = Box::leak(Box::new([req(
            "x.inter",
            leak(sha256_bytes(inter.as_bytes())),
        )]));
        let mut spec = *spec("ml-100k").unwrap();
        spec.files = files;
        let out = dir.path().join("out");
        extract_wheel_members(&spec, &wheel, "pkg/data", &out).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("x.inter")).unwrap(), inter);
        let e = extract_wheel_members(&spec, &wheel, "other", &out)
            .unwrap_err()
            .to_string();
        assert!(e.contains("w.whl") && e.contains("other/x.inter"), "{e}");
        std::fs::write(&wheel, b"not a zip").unwrap();
        let e = extract_wheel_members(&spec, &wheel, "pkg/data", &out)
            .unwrap_err()
            .to_string();
        assert!(e.contains("w.whl") && e.contains("zip"), "{e}");
    }

    #[test]
    fn load_path_reads_user_files_and_applies_k_core() {
        let d = tempfile::tempdir().unwrap();
        let csv = d.path().join("logs.csv");
        // u3 has 2 items (kept without k-core: the split drops it later), item z is rare.
        std::fs::write(
            &csv,
            "user,item,timestamp\nu1,x,1\nu1,y,2\nu1,w,3\nu2,y,1\nu2,x,2\nu2,w,3\nu3,x,1\nu3,z,2\nu4,w,1\nu4,x,2\nu4,y,3\n",
        )
        .unwrap();
        let mut o = opts(None, d.path(), false);
        let ds = load_path(&csv, &o).unwrap();
        assert_eq!(ds.name, "logs");
        assert_eq!((ds.n_users(), ds.n_items()), (4, 4));
        assert_eq!(ds.stats().short_users, 1);
        o.k_core = Some(3);
        let (ds, r) = load_path_with_report(&csv, &o).unwrap();
        assert_eq!((ds.n_users(), ds.n_items()), (3, 3));
        let k = r.k_core.unwrap();
        assert_eq!(
            (k.users_dropped, k.items_dropped, k.interactions_dropped),
            (1, 1, 2)
        );
        o.k_core = Some(0);
        let e = load_path(&csv, &o).unwrap_err().to_string();
        assert!(e.contains("k_core"), "{e}");

        let inter_dir = d.path().join("atomic");
        std::fs::create_dir_all(&inter_dir).unwrap();
        std::fs::write(
            inter_dir.join("shop.inter"),
            "user_id:token\titem_id:token\ttimestamp:float\na\t1\t2\na\t2\t1\n",
        )
        .unwrap();
        std::fs::write(
            inter_dir.join("shop.item"),
            "item_id:token\tcategory:token\n1\tfood\n2\ttoys\n",
        )
        .unwrap();
        let ds = load_path(
            &inter_dir,
            &LoadOptions {
                k_core: None,
                ..o.clone()
            },
        )
        .unwrap();
        assert_eq!(ds.sequences, vec![vec![1, 0]]);
        assert_eq!(ds.category_names, vec!["food", "toys"]);

        let e = load_path(
            &d.path().join("absent.csv"),
            &LoadOptions {
                k_core: None,
                ..o.clone()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("absent.csv"), "{e}");
        std::fs::write(d.path().join("x.xlsx"), "PK").unwrap();
        let e = load_path(
            &d.path().join("x.xlsx"),
            &LoadOptions {
                k_core: None,
                ..o.clone()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("x.xlsx") && e.contains("unknown format"), "{e}");
        std::fs::write(d.path().join("x.parquet"), "PAR1").unwrap();
        let e = load_path(
            &d.path().join("x.parquet"),
            &LoadOptions { k_core: None, ..o },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("x.parquet") && e.contains("Parquet"), "{e}");
    }

    /// The real Amazon Beauty mirror (`REG4REC_DATA_DIR`, else `<workspace>/../shared/data`).
    #[test]
    fn amazon_beauty_from_the_mirror_has_the_published_figures() {
        let o = LoadOptions {
            download: false,
            ..LoadOptions::default()
        };
        let Some(dir) = benchmark_mirror("amazon-beauty").unwrap() else {
            eprintln!("note: skipped: no amazon-beauty mirror (set REG4REC_DATA_DIR)");
            return;
        };
        let (ds, r) = load_with_report("amazon-beauty", &o).unwrap();
        assert_eq!((r.origin, r.dir), (Origin::Mirror, dir.clone()));
        let s = ds.stats();
        assert_eq!(
            (s.users, s.items, s.interactions, s.categories),
            (22363, 12101, 198502, 6)
        );
        assert_eq!(s.short_users, 0);
        assert_eq!(ds.item_ids[0], "1");
        assert!(ds.item_attributes.iter().all(|a| !a.is_empty()));
        // The derived rule agrees with the provided top-level categories on every item.
        let attrs =
            formats::read_s3rec_attributes(&dir.join("Beauty_item2attributes.json")).unwrap();
        let names =
            formats::read_s3rec_attribute_names(&dir.join("Beauty_attribute_names.json")).unwrap();
        let derived = formats::derive_top_level_categories(&attrs);
        for (i, id) in ds.item_ids.iter().enumerate() {
            let given = &ds.category_names[ds.item_category[i] as usize];
            assert_eq!(&names[&derived[id]], given, "item {id}");
        }
    }

    /// The real MovieLens-100k from the recbole wheel (downloaded into the default cache when needed).
    #[test]
    fn ml_100k_loads_from_the_recbole_wheel() {
        let o = LoadOptions::default();
        let (ds, r) = match load_with_report("ml-100k", &o) {
            Ok(x) => x,
            Err(DataError::Download { what, message }) => {
                eprintln!("note: skipped: ml-100k not available offline ({what}: {message})");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let s = ds.stats();
        eprintln!("ml-100k from {:?} {}: {s:?}", r.origin, r.dir.display());
        assert_eq!((s.users, s.items, s.interactions), (943, 1682, 100000));
        assert_eq!(s.min_seq_len, 20);
        assert!(ds.category_names.contains(&"Drama".to_string()));
        let toy = ds.item_index("1").unwrap() as usize;
        assert_eq!(
            ds.category_names[ds.item_category[toy] as usize],
            "Animation"
        );
        assert!(ds.item_attributes[toy].contains(&"release_year=1995".to_string()));
        assert_eq!(ds.item_name(toy), Some("Toy Story"));
        let split = crate::split::LeaveOneOut::new(&ds);
        let t = std::time::Instant::now();
        let f = crate::features::build_item_features(&ds, &split, &Default::default()).unwrap();
        eprintln!(
            "ml-100k features: {} x {} in {:.2?}",
            f.n_items,
            f.dim,
            t.elapsed()
        );
        assert_eq!((f.n_items, f.dim), (1682, 512 + 64));
    }
}
