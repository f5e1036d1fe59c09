//! Small JSON state files of the collectors (a cursor, recently seen ids),
//! replaced atomically: temp file, fsync, rename, directory fsync. A crash
//! leaves the old state or the new one, never a torn file.

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Directory of the collectors' checkpoints inside a data directory.
pub const DIR: &str = "collect";

/// A checkpoint file.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    path: PathBuf,
}

impl Checkpoint {
    /// The checkpoint `name` (a file name stem: letters, digits, `-`, `_`,
    /// `.`; anything else becomes `_`) under `data/collect/`.
    pub fn new(data: &Path, name: &str) -> Checkpoint {
        let stem: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Checkpoint {
            path: data.join(DIR).join(format!("{stem}.json")),
        }
    }

    /// Where it lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved state, or the default when there is none yet; errors
    /// name the file.
    pub fn load<T: DeserializeOwned + Default>(&self) -> anyhow::Result<T> {
        let path = self.path.display();
        match fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("reading the checkpoint {path}")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
            Err(e) => Err(e).with_context(|| format!("reading the checkpoint {path}")),
        }
    }

    /// Replaces the saved state, durably; errors name the file.
    pub fn save<T: Serialize>(&self, state: &T) -> anyhow::Result<()> {
        let dir = self.path.parent().expect("a checkpoint has a directory");
        let bytes = serde_json::to_vec(state).expect("a checkpoint serialises");
        fs::create_dir_all(dir)
            .and_then(|()| write_atomically(&self.path, &bytes))
            .with_context(|| format!("saving the checkpoint {}", self.path.display()))
    }
}

/// Writes `bytes` to `path` through a temp file, fsync, rename and a
/// directory fsync.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("a file has a directory");
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_and_sanitises_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::new(dir.path(), "reddit-politics+news");
        assert!(checkpoint.path().ends_with("collect/reddit-politics_news.json"));
        assert_eq!(checkpoint.load::<Vec<String>>().unwrap(), Vec::<String>::new());
        checkpoint.save(&vec!["t1_a".to_string()]).unwrap();
        assert_eq!(checkpoint.load::<Vec<String>>().unwrap(), vec!["t1_a".to_string()]);
        std::fs::write(checkpoint.path(), b"{").unwrap();
        let error = checkpoint.load::<Vec<String>>().unwrap_err();
        assert!(format!("{error:#}").contains("reddit-politics_news.json"), "{error:#}");
    }
}
