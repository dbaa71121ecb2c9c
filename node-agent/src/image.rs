//! Making a container's image available: present, pulled, or loaded from a tarball.
//!
//! Registry images are used when present locally and pulled otherwise. A named environment
//! `kohakuriver/NAME:base` is loaded from `<shared>/kohakuriver-containers/NAME.tar` (or the
//! newest `NAME-<timestamp>.tar`) when it is missing locally or the tarball is newer than the
//! local image; a marker under the data dir remembers which tarball was loaded, so an image
//! built long ago is not reloaded at every task. Loads of one image are serialised; different
//! images proceed in parallel.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::container_config::{ImageSource, environment_image};
use crate::runtime::{ContainerRuntime, RuntimeError};
use crate::tarball_tags;

/// How long an image pull may take unless the agent is told otherwise (`--pull-timeout`).
pub const DEFAULT_PULL_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// How an image came to be available.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provided {
    /// It was there already.
    Present,
    /// It was pulled from its registry.
    Pulled,
    /// It was loaded from an environment tarball.
    Loaded,
}

/// Ensures images, one at a time per image.
#[derive(Clone)]
pub struct ImageEnsurer {
    runtime: Arc<dyn ContainerRuntime>,
    markers: PathBuf,
    pull_timeout: Duration,
    // A std Mutex around the map only; the per-image async lock is what is held across IO.
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// The newest tarball of environment `name` in `dir`: `NAME.tar` or `NAME-<digits>.tar`.
pub fn find_tarball(dir: &Path, name: &str) -> Option<(PathBuf, SystemTime)> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .flatten()
        .filter(|e| {
            let file = e.file_name();
            let Some(file) = file.to_str() else {
                return false;
            };
            let Some(stem) = file.strip_suffix(".tar") else {
                return false;
            };
            stem == name
                || stem
                    .strip_prefix(name)
                    .and_then(|r| r.strip_prefix('-'))
                    .is_some_and(|ts| !ts.is_empty() && ts.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| Some((e.path(), e.metadata().ok()?.modified().ok()?)))
        .max_by_key(|(_, mtime)| *mtime)
}

/// Reads the names `tarball` would tag and refuses it unless they are environment `name`'s
/// own image (see [`crate::tarball_tags`]).
async fn check_tarball(tarball: &Path, name: &str, image: &str) -> Result<(), RuntimeError> {
    let path = tarball.to_path_buf();
    let tags = tokio::task::spawn_blocking(move || {
        let file = std::io::BufReader::new(std::fs::File::open(&path)?);
        tarball_tags::read_tags(file)
    })
    .await
    .map_err(|e| RuntimeError::Engine(format!("tarball check failed: {e}")))?;
    let refused = match tags {
        Ok(tags) => tarball_tags::check_tags(name, &tags).err(),
        Err(err) => Some(err.to_string()),
    };
    match refused {
        None => Ok(()),
        Some(why) => Err(RuntimeError::ImageRejected {
            image: image.to_string(),
            message: format!("tarball {}: {why}", tarball.display()),
        }),
    }
}

impl ImageEnsurer {
    /// An ensurer keeping its load markers in `markers_dir`.
    pub fn new(runtime: Arc<dyn ContainerRuntime>, markers_dir: PathBuf) -> ImageEnsurer {
        ImageEnsurer {
            runtime,
            markers: markers_dir,
            pull_timeout: DEFAULT_PULL_TIMEOUT,
            locks: Arc::default(),
        }
    }

    /// Gives up on a pull (ImagePullFailed) once it has taken `timeout`: a registry that
    /// accepts the connection and never answers must not hold a task forever.
    pub fn pull_timeout(mut self, timeout: Duration) -> ImageEnsurer {
        self.pull_timeout = timeout;
        self
    }

    fn lock_for(&self, image: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(image.to_string())
            .or_default()
            .clone()
    }

    /// Makes `source` available locally; the error is ImageNotFound or ImagePullFailed with
    /// a message saying what was tried.
    pub async fn ensure(&self, source: &ImageSource) -> Result<(), RuntimeError> {
        self.ensure_reporting(source, |_| {}).await.map(|_| ())
    }

    /// As [`ImageEnsurer::ensure`]; `starting` is told just before a pull or a tarball load
    /// begins (so a long pull can be reported while it runs), and the answer says how the
    /// image came to be there.
    pub async fn ensure_reporting(
        &self,
        source: &ImageSource,
        starting: impl FnOnce(Provided),
    ) -> Result<Provided, RuntimeError> {
        let image = source.image();
        let lock = self.lock_for(&image);
        let _guard = lock.lock().await;
        let local = self.runtime.image(&image).await?;
        match source {
            ImageSource::Registry(_) => {
                if local.is_none() {
                    tracing::info!(image = %image, "pulling image");
                    starting(Provided::Pulled);
                    let pull = tokio::time::timeout(self.pull_timeout, self.runtime.pull(&image));
                    pull.await.map_err(|_| RuntimeError::ImagePullFailed {
                        image: image.clone(),
                        message: format!(
                            "the pull did not finish within {}s; check that the registry answers, or give the agent a longer --pull-timeout",
                            self.pull_timeout.as_secs()
                        ),
                    })??;
                    return Ok(Provided::Pulled);
                }
                Ok(Provided::Present)
            }
            ImageSource::Environment { name, tarball_dir } => {
                let tarball = tarball_dir.as_deref().and_then(|d| find_tarball(d, name));
                let Some((tarball, mtime)) = tarball else {
                    return match local {
                        Some(_) => Ok(Provided::Present),
                        None => Err(RuntimeError::ImageNotFound {
                            image: environment_image(name),
                            message: match tarball_dir {
                                Some(dir) => format!(
                                    "not present locally and no tarball {name}.tar in {}",
                                    dir.display()
                                ),
                                None => "not present locally and this node has no shared \
                                         storage to load it from"
                                    .to_string(),
                            },
                        }),
                    };
                };
                let marker = self.markers.join(format!("{name}.loaded"));
                let stamp = format!(
                    "{}:{}",
                    tarball.display(),
                    mtime
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map(|d| d.as_nanos())
                        .unwrap_or(0)
                );
                let already_loaded =
                    std::fs::read_to_string(&marker).ok().as_deref() == Some(&stamp);
                let local_is_older = match &local {
                    None => true,
                    Some(info) => info
                        .created
                        .is_none_or(|created| SystemTime::from(created) < mtime),
                };
                if local.is_some() && (already_loaded || !local_is_older) {
                    return Ok(Provided::Present);
                }
                check_tarball(&tarball, name, &image).await?;
                starting(Provided::Loaded);
                tracing::info!(image = %image, tarball = %tarball.display(), "loading environment tarball");
                self.runtime.load(&tarball).await?;
                if self.runtime.image(&image).await?.is_none() {
                    return Err(RuntimeError::ImageNotFound {
                        image: image.clone(),
                        message: format!("tarball {} does not contain it", tarball.display()),
                    });
                }
                let _ = std::fs::create_dir_all(&self.markers);
                let _ = std::fs::write(&marker, stamp);
                Ok(Provided::Loaded)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_runtime::{Call, FakeRuntime};
    use crate::tarball_tags::build::image_tar;

    #[test]
    fn newest_tarball_wins() {
        let dir = tempfile::tempdir().unwrap();
        assert!(find_tarball(dir.path(), "env").is_none());
        std::fs::write(dir.path().join("env-100.tar"), "a").unwrap();
        std::fs::write(dir.path().join("envx.tar"), "a").unwrap();
        std::fs::write(dir.path().join("env-abc.tar"), "a").unwrap();
        let (path, _) = find_tarball(dir.path(), "env").unwrap();
        assert_eq!(path.file_name().unwrap(), "env-100.tar");
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.path().join("env.tar"), "b").unwrap();
        let (path, _) = find_tarball(dir.path(), "env").unwrap();
        assert_eq!(path.file_name().unwrap(), "env.tar");
    }

    #[tokio::test]
    async fn registry_image_is_pulled_only_when_missing() {
        let fake = FakeRuntime::new();
        fake.add_image("present:1");
        let markers = tempfile::tempdir().unwrap();
        let e = ImageEnsurer::new(Arc::new(fake.clone()), markers.path().into());
        e.ensure(&ImageSource::Registry("present:1".into()))
            .await
            .unwrap();
        assert!(!fake.calls().iter().any(|c| matches!(c, Call::Pull(_))));
        let err = e
            .ensure(&ImageSource::Registry("missing:1".into()))
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::ImageNotFound { .. }), "{err}");
        assert!(fake.calls().contains(&Call::Pull("missing:1".into())));
    }

    #[tokio::test]
    async fn environment_is_loaded_once_from_its_tarball() {
        let fake = FakeRuntime::new();
        let shared = tempfile::tempdir().unwrap();
        let markers = tempfile::tempdir().unwrap();
        let tar = shared.path().join("torch.tar");
        std::fs::write(&tar, image_tar(&["kohakuriver/torch:base"])).unwrap();
        fake.on_load(&tar, "kohakuriver/torch:base");
        let e = ImageEnsurer::new(Arc::new(fake.clone()), markers.path().into());
        let source = ImageSource::Environment {
            name: "torch".into(),
            tarball_dir: Some(shared.path().into()),
        };
        e.ensure(&source).await.unwrap();
        e.ensure(&source).await.unwrap();
        let loads = fake
            .calls()
            .iter()
            .filter(|c| matches!(c, Call::Load(_)))
            .count();
        assert_eq!(loads, 1);
    }

    #[tokio::test]
    async fn a_tarball_tagging_other_images_is_never_loaded() {
        let fake = FakeRuntime::new();
        let shared = tempfile::tempdir().unwrap();
        let markers = tempfile::tempdir().unwrap();
        let tar = shared.path().join("torch.tar");
        std::fs::write(&tar, image_tar(&["kohakuriver/torch:base", "ubuntu:22.04"])).unwrap();
        fake.on_load(&tar, "kohakuriver/torch:base");
        let e = ImageEnsurer::new(Arc::new(fake.clone()), markers.path().into());
        let source = ImageSource::Environment {
            name: "torch".into(),
            tarball_dir: Some(shared.path().into()),
        };
        let err = e.ensure(&source).await.unwrap_err();
        assert!(matches!(err, RuntimeError::ImageRejected { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("ubuntu:22.04"), "{text}");
        assert!(text.contains("torch.tar"), "{text}");
        assert!(!fake.calls().iter().any(|c| matches!(c, Call::Load(_))));

        // Not a tar at all: refused too, before docker sees it.
        std::fs::write(&tar, "x".repeat(600)).unwrap();
        let err = e.ensure(&source).await.unwrap_err();
        assert!(err.to_string().contains("not a tar archive"), "{err}");
        assert!(!fake.calls().iter().any(|c| matches!(c, Call::Load(_))));
    }

    #[tokio::test]
    async fn environment_without_tarball_or_image_is_not_found() {
        let fake = FakeRuntime::new();
        let markers = tempfile::tempdir().unwrap();
        let e = ImageEnsurer::new(Arc::new(fake), markers.path().into());
        let err = e
            .ensure(&ImageSource::Environment {
                name: "nope".into(),
                tarball_dir: None,
            })
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::ImageNotFound { .. }));
        assert!(err.to_string().contains("kohakuriver/nope:base"));
    }
}
