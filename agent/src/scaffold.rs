//! `vigil plugin new`: creates a plugin project from the templates embedded in the binary
//! (agent/templates/LANG/WORLD/..., see agent/templates/README.md) and the contract's WIT
//! files. The project builds as is (`./build.sh`), with a fixture, a test file
//! (`test/NAME.toml`, run by `./test.sh` with `vigil plugin test`), and a README.

use std::fmt;
use std::path::{Path, PathBuf};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/templates.rs"));
}

/// A language a plugin can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Python,
    Js,
    C,
}

impl Lang {
    /// Its directory under agent/templates and its `--lang` name.
    pub fn name(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
            Lang::C => "c",
        }
    }
}

/// The world (kind of plugin) a project implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    AlertRule,
    TuningPolicy,
}

impl World {
    /// Its name in the WIT package and under agent/templates/LANG.
    pub fn name(self) -> &'static str {
        match self {
            World::AlertRule => "alert-rule",
            World::TuningPolicy => "tuning-policy",
        }
    }
}

/// Why a project could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error(
        "plugin name {0:?} is not valid: use lower-case letters, digits and `-`, starting with a letter (at most 64)"
    )]
    InvalidName(String),
    #[error(
        "no {world} template for {lang} in this build of vigil (available: {available}); pick another --lang or --world"
    )]
    NotAvailable {
        lang: &'static str,
        world: &'static str,
        available: String,
    },
    #[error("{0} already exists and is not empty: choose another name or --dir")]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Checks a plugin name: `[a-z][a-z0-9-]*`, not ending in `-`, at most 64 bytes.
pub fn check_name(name: &str) -> Result<(), ScaffoldError> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(ScaffoldError::InvalidName(name.to_owned()))
    }
}

/// The (language, world) pairs this binary has templates for, as `lang/world`.
pub fn available() -> Vec<String> {
    let mut pairs: Vec<String> = embedded::TEMPLATES
        .iter()
        .filter_map(|(path, _)| {
            let mut parts = path.splitn(3, '/');
            let (lang, world) = (parts.next()?, parts.next()?);
            parts.next()?;
            (world != "common").then(|| format!("{lang}/{world}"))
        })
        .collect();
    pairs.dedup();
    pairs
}

/// One file of a project to create.
pub struct ProjectFile {
    /// Path relative to the project directory.
    pub path: String,
    pub contents: Vec<u8>,
}

impl fmt::Debug for ProjectFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} bytes)", self.path, self.contents.len())
    }
}

/// The files of a new `lang` project for plugin `name` implementing `world`: the template
/// files with `{{name}}`, `{{crate}}` and `{{world}}` filled in (`{{name}}` in their paths
/// too), and `wit/*.wit`.
pub fn render(name: &str, lang: Lang, world: World) -> Result<Vec<ProjectFile>, ScaffoldError> {
    check_name(name)?;
    let prefix = format!("{}/{}/", lang.name(), world.name());
    let common = format!("{}/common/", lang.name());
    let mut files: Vec<ProjectFile> = embedded::TEMPLATES
        .iter()
        .filter_map(|(path, bytes)| {
            let relative = path
                .strip_prefix(&prefix)
                .or_else(|| path.strip_prefix(&common))?;
            Some(ProjectFile {
                path: relative.replace("{{name}}", name),
                contents: fill(bytes, name, world),
            })
        })
        .collect();
    if files.is_empty() {
        return Err(ScaffoldError::NotAvailable {
            lang: lang.name(),
            world: world.name(),
            available: available().join(", "),
        });
    }
    files.extend(embedded::WIT.iter().map(|(file, bytes)| ProjectFile {
        path: format!("wit/{file}"),
        contents: bytes.to_vec(),
    }));
    Ok(files)
}

/// Fills the placeholders of a text file (binary files are copied as they are).
fn fill(bytes: &[u8], name: &str, world: World) -> Vec<u8> {
    match std::str::from_utf8(bytes) {
        Ok(text) => text
            .replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{world}}", world.name())
            .into_bytes(),
        Err(_) => bytes.to_vec(),
    }
}

/// Creates the project in `parent/name` (which must not exist or be empty) and returns its path.
pub fn create(
    parent: &Path,
    name: &str,
    lang: Lang,
    world: World,
) -> Result<PathBuf, ScaffoldError> {
    let files = render(name, lang, world)?;
    let root = parent.join(name);
    if std::fs::read_dir(&root).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(ScaffoldError::Exists(root));
    }
    for file in files {
        let path = root.join(&file.path);
        let write = |path: &Path| -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(path, &file.contents)?;
            if file.path.ends_with(".sh") {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
            }
            Ok(())
        };
        write(&path).map_err(|source| ScaffoldError::Write { path, source })?;
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["a", "cpu-hot", "r2d2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Cpu",
            "1st",
            "cpu-",
            "cpu_hot",
            "cpu hot",
            &"a".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_project_has_its_sources_wit_fixture_expectations_and_readme_filled_in() {
        let pairs = [Lang::Rust, Lang::Python, Lang::Js]
            .into_iter()
            .flat_map(|lang| [(lang, World::AlertRule), (lang, World::TuningPolicy)]);
        for (lang, world) in pairs {
            let files = render("cpu-hot", lang, world).unwrap();
            let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
            for needed in [
                "README.md",
                "build.sh",
                "test.sh",
                "fixtures/batch.json",
                "test/vigil.toml",
                "test/cpu-hot.toml",
                "wit/worlds.wit",
                "wit/types.wit",
                "wit/host.wit",
            ] {
                assert!(
                    paths.contains(&needed),
                    "{lang:?} lacks {needed}: {paths:?}"
                );
            }
            for file in &files {
                let text = String::from_utf8_lossy(&file.contents);
                assert!(
                    !text.contains("{{"),
                    "{lang:?} {}: a placeholder is left",
                    file.path
                );
            }
            let readme = files.iter().find(|f| f.path == "README.md").unwrap();
            assert!(String::from_utf8_lossy(&readme.contents).starts_with("# cpu-hot\n"));
        }
    }

    #[test]
    fn every_language_has_both_worlds_and_names_are_checked() {
        for lang in [Lang::Rust, Lang::Python, Lang::Js, Lang::C] {
            for world in [World::AlertRule, World::TuningPolicy] {
                let files = render("x", lang, world).unwrap();
                assert!(
                    files.iter().any(|f| f.path == "README.md"),
                    "{lang:?} {world:?}"
                );
            }
        }
        assert!(matches!(
            render("Bad", Lang::Rust, World::AlertRule),
            Err(ScaffoldError::InvalidName(_))
        ));
    }

    #[test]
    fn create_refuses_a_non_empty_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = create(dir.path(), "cpu-hot", Lang::Python, World::AlertRule).unwrap();
        assert!(root.join("app.py").is_file());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(root.join("build.sh"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o111, 0o111);
        assert!(matches!(
            create(dir.path(), "cpu-hot", Lang::Python, World::AlertRule),
            Err(ScaffoldError::Exists(_))
        ));
    }
}
