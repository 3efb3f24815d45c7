//! An export on disk: the data file, `README.md` (the dataset card) and
//! `manifest.json` with the sha256 of each file.
//!
//! Layout: when `--out` is a folder (exists, or ends with `/`), the files are
//! `DIR/<data file>`, `DIR/README.md` and `DIR/manifest.json`; otherwise `PATH`,
//! `PATH.README.md` and `PATH.manifest.json`. The data file is written under a
//! `.partial` name and renamed when complete, so a failed export leaves nothing
//! that looks finished. A bundle is one tar holding preferences.jsonl, its card,
//! its manifest and `clips/<sha256>.gif`, with the same two files beside it.

use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::{
    Format, Plan,
    card::{self, FileEntry, Manifest},
    stream::{self, Summary},
};
use crate::clips::ClipStore;

/// Where an export's files go.
#[derive(Debug, Clone)]
pub struct Layout {
    pub data: PathBuf,
    pub readme: PathBuf,
    pub manifest: PathBuf,
}

impl Layout {
    pub fn for_out(out: &Path, format: Format) -> Self {
        let is_dir = out.is_dir() || out.as_os_str().to_string_lossy().ends_with('/');
        if is_dir {
            Layout {
                data: out.join(format.file_name()),
                readme: out.join("README.md"),
                manifest: out.join("manifest.json"),
            }
        } else {
            let side = |ext: &str| {
                let mut s = out.as_os_str().to_owned();
                s.push(ext);
                PathBuf::from(s)
            };
            Layout {
                data: out.to_owned(),
                readme: side(".README.md"),
                manifest: side(".manifest.json"),
            }
        }
    }
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A file being written, with its running sha256.
struct Hashed {
    file: std::io::BufWriter<std::fs::File>,
    hash: Sha256,
    bytes: u64,
}

impl Hashed {
    fn create(path: &Path) -> anyhow::Result<Self> {
        let file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Hashed {
            file: std::io::BufWriter::with_capacity(1 << 20, file),
            hash: Sha256::new(),
            bytes: 0,
        })
    }
    fn finish(mut self, name: String) -> anyhow::Result<FileEntry> {
        self.file.flush()?;
        self.file.get_ref().sync_all()?;
        Ok(FileEntry {
            path: name,
            bytes: self.bytes,
            sha256: hex::encode(self.hash.finalize()),
        })
    }
}

impl Write for Hashed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

fn entry_for(name: &str, bytes: &[u8]) -> FileEntry {
    FileEntry {
        path: name.to_owned(),
        bytes: bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(bytes)),
    }
}

/// The manifest and dataset card of `plan`'s export without keeping its data: the
/// export runs once more into a sha256 (the API's `export/manifest` and
/// `export/card`). The data file's entry matches a download of the same request
/// as long as no judgment in the filters' range was added in between (pin `until`).
pub async fn describe(pool: &PgPool, plan: Arc<Plan>) -> anyhow::Result<(Manifest, String)> {
    let stats = card::stats(pool, &plan).await?;
    let (mut chunks, summary) = stream::start(pool.clone(), plan.clone());
    let (mut hash, mut bytes) = (Sha256::new(), 0u64);
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        hash.update(&chunk);
        bytes += chunk.len() as u64;
    }
    let summary = summary.await.context("the export task died")??;
    let data_file = plan.args.format.file_name();
    let readme = card::readme(&plan, &summary, &stats, data_file);
    let files = vec![
        FileEntry {
            path: data_file.to_owned(),
            bytes,
            sha256: hex::encode(hash.finalize()),
        },
        entry_for("README.md", readme.as_bytes()),
    ];
    Ok((Manifest::new(&plan, &summary, &stats, files), readme))
}

/// Stream `plan`'s data into `path` (via `path.partial`); `progress` gets bytes written so far.
async fn data_file(
    pool: &PgPool,
    plan: Arc<Plan>,
    path: &Path,
    progress: &mut (dyn FnMut(u64) + Send),
) -> anyhow::Result<(FileEntry, Summary)> {
    let partial = partial(path);
    let result = async {
        let mut out = Hashed::create(&partial)?;
        let (mut chunks, summary) = stream::start(pool.clone(), plan);
        while let Some(chunk) = chunks.next().await {
            out.write_all(&chunk?)?;
            progress(out.bytes);
        }
        let summary = summary.await.context("the export task died")??;
        let entry = out.finish(name_of(path))?;
        std::fs::rename(&partial, path)
            .with_context(|| format!("renaming to {}", path.display()))?;
        anyhow::Ok((entry, summary))
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

fn partial(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

/// Write an export (data file, card, manifest) as `layout` says; returns the manifest.
pub async fn write(
    pool: &PgPool,
    clips: Option<&ClipStore>,
    plan: Arc<Plan>,
    layout: &Layout,
    progress: &mut (dyn FnMut(u64) + Send),
) -> anyhow::Result<Manifest> {
    if let Some(dir) = layout.data.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let stats = card::stats(pool, &plan).await?;
    let (data, summary) = if plan.args.format == Format::Bundle {
        let clips = clips.context("a bundle needs the clip store")?;
        bundle(pool, clips, plan.clone(), &stats, &layout.data, progress).await?
    } else {
        data_file(pool, plan.clone(), &layout.data, progress).await?
    };
    let readme = card::readme(&plan, &summary, &stats, &data.path);
    std::fs::write(&layout.readme, &readme)?;
    let files = vec![data, entry_for(&name_of(&layout.readme), readme.as_bytes())];
    let manifest = Manifest::new(&plan, &summary, &stats, files);
    std::fs::write(&layout.manifest, serde_json::to_vec_pretty(&manifest)?)?;
    Ok(manifest)
}

/// The bundle: preferences.jsonl, README.md, manifest.json and the clips, in one tar.
async fn bundle(
    pool: &PgPool,
    clips: &ClipStore,
    plan: Arc<Plan>,
    stats: &card::CardStats,
    path: &Path,
    progress: &mut (dyn FnMut(u64) + Send),
) -> anyhow::Result<(FileEntry, Summary)> {
    let work = tempfile_dir(path)?;
    let result = async {
        let jsonl = work.join("preferences.jsonl");
        let (data, summary) = data_file(pool, plan.clone(), &jsonl, progress).await?;
        let readme = card::readme(&plan, &summary, stats, "preferences.jsonl");
        let mut files = vec![data, entry_for("README.md", readme.as_bytes())];
        let partial = partial(path);
        let mut out = Hashed::create(&partial)?;
        {
            let mut tar = tar::Builder::new(&mut out);
            tar.mode(tar::HeaderMode::Deterministic);
            tar.append_path_with_name(&jsonl, "preferences.jsonl")?;
            append(&mut tar, "README.md", readme.as_bytes())?;
            // One clip in memory at a time.
            let mut clip_entries = Vec::new();
            for sha in &summary.clips {
                let bytes = clips.get(sha).await?;
                let name = format!("clips/{sha}.gif");
                append(&mut tar, &name, &bytes)?;
                clip_entries.push(entry_for(&name, &bytes));
            }
            files.extend(clip_entries);
            let manifest = Manifest::new(&plan, &summary, stats, files);
            append(
                &mut tar,
                "manifest.json",
                &serde_json::to_vec_pretty(&manifest)?,
            )?;
            tar.finish()?;
        }
        let entry = out.finish(name_of(path))?;
        std::fs::rename(&partial, path)?;
        anyhow::Ok((entry, summary))
    }
    .await;
    let _ = std::fs::remove_dir_all(&work);
    if result.is_err() {
        let _ = std::fs::remove_file(partial(path));
    }
    result
}

fn append<W: Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, name, bytes)?;
    Ok(())
}

/// A scratch folder beside `path` (same file system as the result).
fn tempfile_dir(path: &Path) -> anyhow::Result<PathBuf> {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".work-{}", uuid::Uuid::new_v4().simple()));
    let dir = PathBuf::from(s);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
