//! SYNC.json manifests (issue 14, after the seed *Generic Skill Sync System Design*): a skill
//! declares a generator that renders its state keys into a markdown file.
//!
//! This module is pure apart from reading files: it parses and validates a manifest (schema
//! version "1"), finds skills (`skills/*/` beside `SKILL.md`, plus extra roots), checks that a
//! generator is an executable regular file inside its skill directory, resolves an `outputFile`
//! to a path that is safe to write on a synced workspace, and hashes what an approval covers.
//! Running a generator is the CLI's job (`cli/src/runner/`).

use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use crate::state::validate_pattern;

/// The manifest's file name.
pub const MANIFEST: &str = "SYNC.json";

/// The skill description file a skill directory holds.
pub const SKILL_MD: &str = "SKILL.md";

/// The one schema version understood.
pub const SCHEMA_VERSION: &str = "1";

/// A parsed, valid manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Schema version ("1").
    pub version: String,
    /// Where the generated file goes: absolute, or relative to the workspace root.
    pub output_file: String,
    /// State key patterns the generator renders.
    pub patterns: Vec<String>,
    /// The generator, relative to the skill directory.
    pub generator: String,
    /// What is synced, for people.
    pub description: Option<String>,
}

/// What is wrong with a skill or its manifest: always names the file, and the field when one is
/// at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkillError {
    /// The file could not be read.
    #[error("{file}: cannot read it: {why}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        why: String,
    },
    /// The file is not a JSON object.
    #[error("{file}: not valid JSON: {why}")]
    Json {
        /// The file.
        file: PathBuf,
        /// The parser's message.
        why: String,
    },
    /// A field is missing or wrong.
    #[error("{file}: field \"{field}\": {why}")]
    Field {
        /// The file.
        file: PathBuf,
        /// The field.
        field: &'static str,
        /// Why.
        why: String,
    },
    /// A schema version this botsync does not know.
    #[error(
        "{file}: field \"version\": schema version {version:?} is not supported (this botsync reads version \"1\"); upgrade botsync or write a version \"1\" manifest"
    )]
    UnknownVersion {
        /// The file.
        file: PathBuf,
        /// The version found.
        version: String,
    },
    /// No skill of that name has a directory.
    #[error("no skill named {name:?} under {searched}; `botsync gen list` shows the skills found")]
    NoSkill {
        /// The name asked for.
        name: String,
        /// The roots searched.
        searched: String,
    },
    /// The skill has no SYNC.json.
    #[error("skill {name:?} has no {MANIFEST} ({dir}); add one to make it generate a file")]
    NoManifest {
        /// The skill.
        name: String,
        /// Its directory.
        dir: PathBuf,
    },
}

impl Manifest {
    /// Parse and validate the manifest `file` holding `bytes` (generator presence is checked by
    /// [`check_generator`]).
    pub fn parse(file: &Path, bytes: &[u8]) -> Result<Manifest, SkillError> {
        let field = |field: &'static str, why: &str| SkillError::Field {
            file: file.to_path_buf(),
            field,
            why: why.to_owned(),
        };
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| SkillError::Json {
            file: file.to_path_buf(),
            why: e.to_string(),
        })?;
        let Some(obj) = v.as_object() else {
            return Err(SkillError::Json {
                file: file.to_path_buf(),
                why: "the manifest must be a JSON object".to_owned(),
            });
        };
        let string = |name: &'static str| -> Result<Option<String>, SkillError> {
            match obj.get(name) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(field(name, "must be a string")),
            }
        };
        let version = string("version")?.ok_or_else(|| field("version", "is required"))?;
        if version != SCHEMA_VERSION {
            return Err(SkillError::UnknownVersion {
                file: file.to_path_buf(),
                version,
            });
        }
        for key in obj.keys() {
            if ![
                "version",
                "outputFile",
                "patterns",
                "generator",
                "description",
            ]
            .contains(&key.as_str())
            {
                return Err(SkillError::Field {
                    file: file.to_path_buf(),
                    field: "(unknown)",
                    why: format!(
                        "{key:?} is not a field of schema version \"1\" (version, outputFile, patterns, generator, description)"
                    ),
                });
            }
        }
        let output_file =
            string("outputFile")?.ok_or_else(|| field("outputFile", "is required"))?;
        if output_file.trim().is_empty() {
            return Err(field("outputFile", "may not be empty"));
        }
        if output_file.contains('\0') {
            return Err(field("outputFile", "may not contain a NUL byte"));
        }
        let generator = string("generator")?.ok_or_else(|| field("generator", "is required"))?;
        let description = string("description")?;
        let patterns = match obj.get("patterns") {
            None => return Err(field("patterns", "is required")),
            Some(serde_json::Value::Array(a)) => {
                if a.is_empty() {
                    return Err(field("patterns", "needs at least one pattern"));
                }
                let mut out = Vec::new();
                for p in a {
                    let Some(p) = p.as_str() else {
                        return Err(field("patterns", "must be an array of strings"));
                    };
                    validate_pattern(p).map_err(|e| field("patterns", &e.to_string()))?;
                    out.push(p.to_owned());
                }
                out
            }
            Some(_) => return Err(field("patterns", "must be an array of strings")),
        };
        generator_rel(&generator).map_err(|why| field("generator", &why))?;
        Ok(Manifest {
            version,
            output_file,
            patterns,
            generator,
            description,
        })
    }

    /// Read and parse `file`.
    pub fn load(file: &Path) -> Result<(Manifest, Vec<u8>), SkillError> {
        let bytes = std::fs::read(file).map_err(|e| SkillError::Read {
            file: file.to_path_buf(),
            why: e.to_string(),
        })?;
        Ok((Manifest::parse(file, &bytes)?, bytes))
    }
}

/// The generator's path relative to the skill directory, refused if absolute or if it climbs
/// out with `..`.
fn generator_rel(generator: &str) -> Result<PathBuf, String> {
    if generator.trim().is_empty() {
        return Err("may not be empty".to_owned());
    }
    let p = Path::new(generator);
    let mut rel = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(n) => rel.push(n),
            Component::ParentDir => {
                return Err(format!(
                    "{generator:?} climbs out of the skill directory with \"..\"; the generator must be inside it"
                ));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "{generator:?} is absolute; give it relative to the skill directory (e.g. \"./scripts/sync.sh\")"
                ));
            }
        }
    }
    if rel.as_os_str().is_empty() {
        return Err(format!("{generator:?} names no file"));
    }
    Ok(rel)
}

/// The generator of `manifest` in `skill_dir`: an executable regular file inside the directory
/// (no symlink leading out). Returns its path.
pub fn check_generator(
    file: &Path,
    skill_dir: &Path,
    manifest: &Manifest,
) -> Result<PathBuf, SkillError> {
    let field = |why: String| SkillError::Field {
        file: file.to_path_buf(),
        field: "generator",
        why,
    };
    let rel = generator_rel(&manifest.generator).map_err(field)?;
    let path = skill_dir.join(&rel);
    let meta = std::fs::symlink_metadata(&path).map_err(|e| {
        field(format!(
            "{} does not exist or cannot be read ({e})",
            path.display()
        ))
    })?;
    if meta.file_type().is_symlink() {
        return Err(field(format!(
            "{} is a symlink; the generator must be a regular file inside the skill directory",
            path.display()
        )));
    }
    if !meta.is_file() {
        return Err(field(format!("{} is not a regular file", path.display())));
    }
    let real_dir = skill_dir.canonicalize().map_err(|e| {
        field(format!(
            "the skill directory {} cannot be resolved ({e})",
            skill_dir.display()
        ))
    })?;
    let real = path
        .canonicalize()
        .map_err(|e| field(format!("{} cannot be resolved ({e})", path.display())))?;
    if !real.starts_with(&real_dir) {
        return Err(field(format!(
            "{} leads outside the skill directory through a symlink",
            path.display()
        )));
    }
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(field(format!(
                "{} is not executable; run `chmod +x {}`",
                path.display(),
                path.display()
            )));
        }
    }
    Ok(path)
}

/// A skill directory found by [`discover`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkillDir {
    /// The directory's name, the skill's name.
    pub name: String,
    /// The directory.
    pub dir: PathBuf,
    /// Whether it holds a SYNC.json.
    pub has_manifest: bool,
}

impl SkillDir {
    /// Its manifest's path.
    pub fn manifest_path(&self) -> PathBuf {
        self.dir.join(MANIFEST)
    }
}

/// Every skill directory under `roots` (each root holds one directory per skill, like
/// `WORKSPACE/skills/`): a directory holding `SKILL.md` or `SYNC.json`. The first root to hold
/// a name wins; names are sorted within a root. Unreadable or missing roots are skipped.
pub fn discover(roots: &[PathBuf]) -> Vec<SkillDir> {
    let mut out: Vec<SkillDir> = Vec::new();
    for root in roots {
        let Ok(rd) = std::fs::read_dir(root) else {
            continue;
        };
        let mut here: Vec<SkillDir> = rd
            .filter_map(Result::ok)
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_owned();
                let dir = e.path();
                let has_manifest = dir.join(MANIFEST).is_file();
                (has_manifest || dir.join(SKILL_MD).is_file()).then_some(SkillDir {
                    name,
                    dir,
                    has_manifest,
                })
            })
            .collect();
        here.sort_by(|a, b| a.name.cmp(&b.name));
        for s in here {
            if !out.iter().any(|o| o.name == s.name) {
                out.push(s);
            }
        }
    }
    out
}

/// Why an output path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: field \"outputFile\": {why}")]
pub struct OutputError {
    /// The manifest.
    pub file: PathBuf,
    /// Why.
    pub why: String,
}

/// Resolve `output_file` of the manifest `file` to where it may be written: a relative path
/// inside `workspace` (never under `.botsync/`), or an absolute one inside `workspace` or one of
/// `data_dirs`; never through `..`, and no existing component from the base down to the file
/// may be a symlink. The parent directory must exist. The file itself, if it exists, must be a
/// regular file.
pub fn resolve_output(
    file: &Path,
    output_file: &str,
    workspace: &Path,
    data_dirs: &[PathBuf],
) -> Result<PathBuf, OutputError> {
    let err = |why: String| OutputError {
        file: file.to_path_buf(),
        why,
    };
    let p = Path::new(output_file);
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(err(format!(
            "{output_file:?} uses \"..\"; give a path inside the workspace or a configured data directory"
        )));
    }
    let (base, rel): (&Path, PathBuf) = if p.is_absolute() {
        let bases = std::iter::once(workspace).chain(data_dirs.iter().map(PathBuf::as_path));
        let mut found = None;
        for b in bases {
            if let Ok(r) = p.strip_prefix(b) {
                found = Some((b, r.to_path_buf()));
                break;
            }
        }
        found.ok_or_else(|| {
            err(format!(
                "{output_file:?} is outside the workspace {} and every configured data directory (\"data_dirs\" in .botsync/gen.json)",
                workspace.display()
            ))
        })?
    } else {
        (workspace, p.to_path_buf())
    };
    let rel: PathBuf = rel
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    if rel.as_os_str().is_empty() {
        return Err(err(format!(
            "{output_file:?} names a directory, not a file"
        )));
    }
    if base == workspace
        && rel
            .components()
            .next()
            .is_some_and(|c| c.as_os_str().eq_ignore_ascii_case(".botsync"))
    {
        return Err(err(format!(
            "{output_file:?} is inside .botsync/, botsync's own state; choose a path outside it"
        )));
    }
    // Walk down from the base: no component may be a symlink.
    let mut at = base.to_path_buf();
    let n = rel.components().count();
    for (i, c) in rel.components().enumerate() {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(err(format!(
                    "{} is a symlink; botsync never writes through one",
                    at.display()
                )));
            }
            Ok(m) if i + 1 < n && !m.is_dir() => {
                return Err(err(format!("{} is not a directory", at.display())));
            }
            Ok(m) if i + 1 == n && !m.is_file() => {
                return Err(err(format!(
                    "{} exists and is not a regular file",
                    at.display()
                )));
            }
            Ok(_) => {}
            Err(_) if i + 1 < n => {
                return Err(err(format!(
                    "the directory {} does not exist; create it first",
                    at.display()
                )));
            }
            Err(_) => {}
        }
    }
    Ok(at)
}

/// The hash an approval records: BLAKE3 over the manifest's bytes and the generator's bytes
/// (each length-prefixed), hex.
pub fn approval_hash(manifest: &[u8], generator: &[u8]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"botsync-gen-approval-v1\0");
    h.update(&(manifest.len() as u64).to_le_bytes());
    h.update(manifest);
    h.update(&(generator.len() as u64).to_le_bytes());
    h.update(generator);
    h.finalize().to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Manifest, SkillError> {
        Manifest::parse(Path::new("skills/m/SYNC.json"), json.as_bytes())
    }

    #[test]
    fn the_seed_manifest_parses() {
        let m = parse(
            r#"{"version":"1","outputFile":"/data/MEMORY.md","patterns":["memory:*"],"generator":"./scripts/sync.sh","description":"d"}"#,
        )
        .unwrap();
        assert_eq!(m.patterns, ["memory:*"]);
        assert_eq!(m.description.as_deref(), Some("d"));
    }

    #[test]
    fn errors_name_file_field_and_why() {
        let base = r#""outputFile":"M.md","patterns":["memory:*"],"generator":"g.sh""#;
        let e = parse(&format!(r#"{{"version":"2",{base}}}"#)).unwrap_err();
        assert!(matches!(e, SkillError::UnknownVersion { .. }), "{e}");
        let e = parse(&format!("{{{base}}}")).unwrap_err().to_string();
        assert!(
            e.contains("skills/m/SYNC.json: field \"version\": is required"),
            "{e}"
        );
        let e = parse(r#"{"version":"1","patterns":["a:*"],"generator":"g"}"#).unwrap_err();
        assert!(e.to_string().contains("\"outputFile\": is required"), "{e}");
        let e = parse(r#"{"version":"1","outputFile":"M","patterns":["a:["],"generator":"g"}"#)
            .unwrap_err();
        assert!(
            e.to_string().contains("\"patterns\": invalid pattern"),
            "{e}"
        );
        let e =
            parse(r#"{"version":"1","outputFile":"M","patterns":[],"generator":"g"}"#).unwrap_err();
        assert!(e.to_string().contains("at least one"), "{e}");
        let e = parse(r#"{"version":"1","outputFile":"M","patterns":["a"],"generator":"../x"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("\"generator\""), "{e}");
        let e = parse(r#"{"version":"1","outputFile":"M","patterns":["a"],"generator":"/bin/sh"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("is absolute"), "{e}");
        let e = parse(&format!(r#"{{"version":"1",{base},"extra":1}}"#)).unwrap_err();
        assert!(e.to_string().contains("\"extra\""), "{e}");
        assert!(matches!(parse("[1]"), Err(SkillError::Json { .. })));
        assert!(matches!(parse("{"), Err(SkillError::Json { .. })));
    }

    #[test]
    fn output_paths_stay_inside_and_never_follow_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = tmp.path().join("ws");
        let data = tmp.path().join("data");
        std::fs::create_dir_all(ws.join(".botsync")).unwrap();
        std::fs::create_dir_all(ws.join("out")).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        let f = Path::new("SYNC.json");
        let ok = |o: &str| resolve_output(f, o, &ws, std::slice::from_ref(&data));
        assert_eq!(ok("MEMORY.md").unwrap(), ws.join("MEMORY.md"));
        assert_eq!(ok("./out/N.md").unwrap(), ws.join("out/N.md"));
        let abs = data.join("M.md");
        assert_eq!(ok(abs.to_str().unwrap()).unwrap(), abs);
        assert!(ok("../escape.md").is_err());
        assert!(ok("/etc/passwd").is_err());
        assert!(ok(".botsync/config.json").is_err());
        assert!(ok("missing/dir/M.md").is_err());
        std::os::unix::fs::symlink(tmp.path(), ws.join("link")).unwrap();
        assert!(ok("link/M.md").unwrap_err().why.contains("symlink"));
        std::os::unix::fs::symlink("/etc/hostname", ws.join("L.md")).unwrap();
        assert!(ok("L.md").unwrap_err().why.contains("symlink"));
    }

    #[test]
    fn approval_hash_covers_both_files() {
        let a = approval_hash(b"m", b"g");
        assert_ne!(a, approval_hash(b"m", b"g2"));
        assert_ne!(a, approval_hash(b"m2", b"g"));
        assert_ne!(approval_hash(b"ab", b""), approval_hash(b"a", b"b"));
    }
}
