//! Where a model comes from: a local directory, or a hub id resolved through
//! the Hugging Face cache layout (`models--org--name/snapshots/<rev>/…`).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The files of one model, all in `dir`.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// What the user passed (`--model`): a path or a hub id.
    pub spec: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub weights: PathBuf,
}

/// The hub cache directory, as `huggingface_hub` computes it.
pub fn hub_cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(p);
    }
    hf_hub::Cache::from_env().path().clone()
}

/// Resolves `spec` (a directory, or a hub id such as
/// `sentence-transformers/all-MiniLM-L6-v2`) to its files.
///
/// # Errors
/// A directory missing a required file names the file; an id absent from the
/// cache (and not downloadable) names the id, the cache searched and the fix.
pub fn resolve(spec: &str) -> Result<ModelFiles> {
    let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1");
    resolve_in(spec, &hub_cache_dir(), !offline)
}

/// [`resolve`] against an explicit cache directory.
pub fn resolve_in(spec: &str, cache_dir: &Path, allow_download: bool) -> Result<ModelFiles> {
    let path = Path::new(spec);
    if path.is_dir() {
        return from_dir(spec, path);
    }
    if path.exists() || spec.starts_with('.') || spec.starts_with('/') || spec.matches('/').count() > 1 {
        return Err(Error::Model(format!("`{spec}` is not a model directory")));
    }
    let cache = hf_hub::Cache::new(cache_dir.to_path_buf());
    let repo = cache.model(spec.to_string());
    if let Some(config) = repo.get("config.json") {
        let dir = config.parent().expect("snapshot file has a parent").to_path_buf();
        return from_dir(spec, &dir);
    }
    let attempt = if allow_download { download(spec, cache_dir) } else { Err("offline: HF_HUB_OFFLINE=1".to_string()) };
    attempt.map_err(|why| {
        Error::Model(format!(
            "model `{spec}` is not in the Hugging Face cache `{}` ({why}). \
             Run `scripts/fetch-assets.sh` to install all-MiniLM-L6-v2 offline, \
             or pass `--model DIR` with config.json, model.safetensors and tokenizer.json",
            cache_dir.display()
        ))
    })
}

fn from_dir(spec: &str, dir: &Path) -> Result<ModelFiles> {
    let need = |name: &str| -> Result<PathBuf> {
        let p = dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(Error::Model(format!("model directory `{}` has no `{name}`", dir.display())))
        }
    };
    let config = need("config.json")?;
    let weights = need("model.safetensors")?;
    if !dir.join("tokenizer.json").is_file() && !dir.join("vocab.txt").is_file() {
        return Err(Error::Model(format!(
            "model directory `{}` has neither `tokenizer.json` nor `vocab.txt`",
            dir.display()
        )));
    }
    Ok(ModelFiles { spec: spec.to_string(), dir: dir.to_path_buf(), config, weights })
}

#[cfg(feature = "download")]
fn download(spec: &str, cache_dir: &Path) -> std::result::Result<ModelFiles, String> {
    let api = hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(cache_dir.to_path_buf()))
        .with_progress(true)
        .build()
        .map_err(|e| e.to_string())?;
    let repo = api.model(spec.to_string());
    let config = repo.get("config.json").map_err(|e| format!("download failed: {e}"))?;
    repo.get("model.safetensors").map_err(|e| format!("download failed: {e}"))?;
    if repo.get("tokenizer.json").is_err() {
        repo.get("vocab.txt").map_err(|e| format!("download failed: {e}"))?;
    }
    let dir = config.parent().expect("snapshot file has a parent").to_path_buf();
    from_dir(spec, &dir).map_err(|e| e.to_string())
}

#[cfg(not(feature = "download"))]
fn download(_spec: &str, _cache_dir: &Path) -> std::result::Result<ModelFiles, String> {
    Err("built without the `download` feature".into())
}
