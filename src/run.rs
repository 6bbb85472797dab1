//! A run and the model it holds, loaded once for every command: which
//! model (a directory or hub id), which task and data (from the run's own
//! `config.yaml` or `prune.yaml`, else flags), which thresholds (the run's
//! `thresholds.safetensors` or an exported file, checked against the model),
//! and the evaluation plans built from them.

use std::path::{Path, PathBuf};

use crate::config::{load_yaml, FinetuneConfig};
use crate::data::{Encoded, Task};
use crate::error::{Error, Result};
use crate::model::{params, Bert, BertConfig, Masking, ModelFiles, Numerics, Params, Plan};
use crate::prune::config::PruneConfig;
use crate::prune::file::{sha256_file, ThresholdFile};
use crate::prune::Thresholds;

/// The file a pruning run keeps θ, β and p in, next to its weights.
pub const THRESHOLDS_FILE: &str = "thresholds.safetensors";

/// A model ready to train or evaluate, with where it came from.
pub struct Loaded {
    pub files: ModelFiles,
    pub cfg: BertConfig,
    pub params: Params,
    pub tokenizer: tokenizers::Tokenizer,
}

/// Resolves and loads a model; with `num_labels`, adds a freshly initialised
/// (seeded) head if the weights have none.
pub fn load_model(spec: &str, num_labels: Option<usize>, max_len: usize, seed: u64) -> Result<Loaded> {
    let files = crate::model::resolve(spec)?;
    let mut cfg = BertConfig::load(&files.config)?;
    let mut params = Params::load(&files.weights)?;
    if let Some(k) = num_labels {
        if let Some(have) = cfg.num_labels.filter(|&h| h != k && params.contains("classifier.weight")) {
            return Err(Error::Model(format!("`{}` has a {have}-label head, the task needs {k}", files.weights.display())));
        }
        let mut rng = params::seeded(seed);
        params.init_if_missing("classifier.weight", &[k, cfg.hidden_size], 0.02, &mut rng)?;
        params.init_if_missing("classifier.bias", &[k], 0.0, &mut rng)?;
        cfg.num_labels = Some(k);
    }
    let tokenizer = crate::data::load_tokenizer(&files.dir, max_len)?;
    Ok(Loaded { files, cfg, params, tokenizer })
}

/// Reads and tokenises one split, keeping the first `limit` examples.
pub fn load_split(tok: &tokenizers::Tokenizer, data_dir: &Path, task: Task, split: &str, limit: Option<usize>) -> Result<Vec<Encoded>> {
    let mut ex = crate::data::read_split(data_dir, task, split)?;
    if let Some(n) = limit {
        ex.truncate(n);
    }
    crate::data::encode_examples(tok, &ex)
}

/// What a run directory says about itself (from `config.yaml` of
/// `finetune` or `prune.yaml` of `prune`), so later commands need no
/// repeated flags.
#[derive(Clone, Debug, Default)]
pub struct RunInfo {
    pub task: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub max_seq_len: Option<usize>,
    pub prune: Option<PruneConfig>,
}

impl RunInfo {
    pub fn read(dir: &Path) -> Result<RunInfo> {
        let ft = dir.join("config.yaml");
        let pr = dir.join("prune.yaml");
        if pr.is_file() {
            let c: PruneConfig = load_yaml(&pr)?;
            return Ok(RunInfo { task: Some(c.task.clone()), data_dir: Some(c.data_dir.clone()), max_seq_len: Some(c.max_seq_len), prune: Some(c) });
        }
        if ft.is_file() {
            let c: FinetuneConfig = load_yaml(&ft)?;
            return Ok(RunInfo { task: Some(c.task), data_dir: Some(c.data_dir), max_seq_len: Some(c.max_seq_len), prune: None });
        }
        Ok(RunInfo::default())
    }

    /// The flag if given, else the run's value, else an error naming the
    /// flag. A flag naming another task than the run was trained on is an
    /// error: its head would answer a different question.
    pub fn task(&self, flag: &Option<String>) -> Result<String> {
        if let (Some(f), Some(t)) = (flag, &self.task) {
            let (a, b) = (Task::from_name(f)?, Task::from_name(t)?);
            if a.dir_name() != b.dir_name() {
                return Err(Error::Config(format!("the checkpoint was trained on {}, not {}: a checkpoint for another task", b.name(), a.name())));
            }
        }
        flag.clone().or_else(|| self.task.clone()).ok_or_else(|| Error::Config("--task is required (the checkpoint has no config.yaml or prune.yaml)".into()))
    }

    pub fn data_dir(&self, flag: &Option<PathBuf>) -> Result<PathBuf> {
        flag.clone().or_else(|| self.data_dir.clone()).ok_or_else(|| Error::Config("--data-dir is required (the checkpoint has no config.yaml or prune.yaml)".into()))
    }
}

/// Per-layer θ, β and the score's length exponent p.
#[derive(Clone, Debug, PartialEq)]
pub struct ThresholdSet {
    pub theta: Vec<f64>,
    pub beta: Vec<f64>,
    pub exponent: Vec<f64>,
    /// Pruned tokens become one kept token, their mean.
    pub merge: bool,
}

/// Which run, and which examples.
#[derive(Clone, Debug, Default)]
pub struct RunSpec {
    /// A run directory (`finetune` or `prune`), or a model directory with a task head.
    pub checkpoint: PathBuf,
    /// An exported threshold file instead of the run's own thresholds.
    pub thresholds: Option<PathBuf>,
    pub task: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub split: String,
    pub limit: Option<usize>,
    pub max_seq_len: Option<usize>,
}

/// A fine-tuned or pruned run, ready to simulate or encode for the engine.
pub struct Run {
    pub loaded: Loaded,
    pub model: Bert,
    pub task: Task,
    pub data: Vec<Encoded>,
    pub max_seq_len: usize,
    /// θ, β and p, if the run or file has them.
    pub thresholds: Option<ThresholdSet>,
    pub prune_cfg: Option<PruneConfig>,
    pub weights_sha256: String,
}

/// Which functions and masks an evaluation uses (the rows of the paper's table).
#[derive(Clone, Copy, Debug, Default)]
pub struct Ablation {
    /// Exact functions, no masks: the fine-tuned model itself.
    pub exact: bool,
    pub no_prune: bool,
    pub no_reduce: bool,
}

impl Run {
    /// The run with `spec`'s split of its task's data.
    pub fn load(spec: &RunSpec) -> Result<Run> {
        let (mut run, info) = Run::open_with_info(spec)?;
        let data_dir = info.data_dir(&spec.data_dir)?;
        let split = if spec.split.is_empty() { "dev" } else { &spec.split };
        run.data = load_split(&run.loaded.tokenizer, &data_dir, run.task, split, spec.limit)?;
        Ok(run)
    }

    /// The run without data (`data` empty): model, task and thresholds, all
    /// checked, for the parties of the protocol, which never read a dataset.
    pub fn open(spec: &RunSpec) -> Result<Run> {
        Ok(Run::open_with_info(spec)?.0)
    }

    fn open_with_info(spec: &RunSpec) -> Result<(Run, RunInfo)> {
        let checkpoint = &spec.checkpoint;
        let info = RunInfo::read(checkpoint)?;
        let task = Task::from_name(&info.task(&spec.task)?)?;
        let max_len = spec.max_seq_len.or(info.max_seq_len).unwrap_or(128);
        let loaded = load_model(&checkpoint.to_string_lossy(), None, max_len, 0)?;
        let k = loaded.cfg.num_labels.ok_or_else(|| Error::Model(format!("`{}` has no task head: fine-tune it first", checkpoint.display())))?;
        if k != task.num_labels() {
            return Err(Error::Model(format!("`{}` has a {k}-label head but {} needs {}: a checkpoint for another task", checkpoint.display(), task.name(), task.num_labels())));
        }
        let model = Bert::new(&loaded.cfg, &loaded.params, Some(k))?;
        let weights_sha256 = sha256_file(&loaded.files.weights)?;
        let thresholds = load_thresholds(checkpoint, spec.thresholds.as_deref(), &loaded, task, &weights_sha256, info.prune.as_ref())?;
        Ok((Run { loaded, model, task, data: vec![], max_seq_len: max_len, thresholds, prune_cfg: info.prune.clone(), weights_sha256 }, info))
    }

    pub fn layers(&self) -> usize {
        self.model.layers.len()
    }

    /// The plan the switches ask for, checked against what the run has.
    pub fn plan(&self, ab: Ablation, physical: bool) -> Result<Plan> {
        if ab.exact {
            return Ok(Plan { numerics: Numerics::Exact, masking: Masking::Off, physical: false });
        }
        let learned = |f: fn(&PruneConfig) -> bool| self.prune_cfg.as_ref().is_none_or(f);
        let (want_theta, want_beta) = (!ab.no_prune && learned(|c| c.prune), !ab.no_reduce && learned(|c| c.reduce));
        let masking = match (&self.thresholds, want_theta || want_beta) {
            (_, false) => Masking::Hard { theta: None, beta: None, exponent: None, merge: false },
            (None, true) => {
                return Err(Error::Config(format!(
                    "`{}` has no thresholds ({THRESHOLDS_FILE}): run `prune` first, pass --thresholds or --theta, or simulate with --no-prune --no-reduce",
                    self.loaded.files.dir.display()
                )))
            }
            (Some(t), true) => Masking::Hard { theta: want_theta.then(|| t.theta.clone()), beta: want_beta.then(|| t.beta.clone()), exponent: Some(t.exponent.clone()), merge: t.merge },
        };
        Ok(Plan { numerics: Numerics::Approx, masking, physical })
    }
}

/// A run's weights as the candle-free engine reads them.
pub fn engine_weights(loaded: &Loaded) -> Result<crate::secure::weights::BertWeights> {
    use crate::secure::weights::{BertConfig as EngineBertConfig, BertWeights};
    let f = &loaded.files;
    let cfg = EngineBertConfig::from_json_file(&f.config).map_err(|e| Error::Model(format!("`{}`: {e}", f.config.display())))?;
    BertWeights::from_safetensors_file(&f.weights, cfg).map_err(|e| Error::Model(format!("`{}`: {e}", f.weights.display())))
}

/// The engine's encoding of a run's weights in `ring`.
pub fn engine_model(loaded: &Loaded, ring: crate::fixed::Ring) -> Result<crate::secure::bert::EngineModel> {
    Ok(crate::secure::bert::EngineModel::from_weights(&engine_weights(loaded)?, &ring))
}

/// The secure-cost view of simulated shapes under `plan`: the two-party
/// protocol's online bytes and rounds (exact truncation, shuffle
/// compaction, ring 37/12) over the unpruned model's, from the shapes
/// alone.
pub fn secure_cost(model: &crate::secure::bert::EngineModel, plan: &Plan, shapes: &[crate::prune::simulate::ExampleShape]) -> crate::mpc::estimate::SecureCost {
    use crate::mpc::estimate::{layer_switches, secure_ratios, Protocol};
    let (prune, reduce, merge) = match &plan.masking {
        Masking::Hard { theta, beta, merge, .. } => (theta.is_some(), beta.is_some() && plan.numerics == Numerics::Approx, *merge),
        Masking::Ratio { .. } => (true, false, false),
        _ => (false, false, false),
    };
    let switches = layer_switches(model.num_layers(), prune, reduce, merge);
    let proto = Protocol { truncation: crate::fixed::Truncation::Exact, compaction: crate::mpc::sort::Compaction::Shuffle, suite: Default::default() };
    secure_ratios(model, &switches, proto, shapes)
}

/// A plan checked on the fixed-point engine: its metrics, how often it
/// predicts what the float simulation predicts, and the protocol's online
/// cost from the engine's own shapes.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EngineCheck {
    pub metrics: crate::train::Metrics,
    pub agreement: f64,
    pub overflows: u64,
    pub secure: crate::mpc::estimate::SecureCost,
}

/// Runs `plan` (hard masks, approximations) through the engine on the
/// run's data at `ring`, exact truncation, and compares with `sim`.
pub fn engine_check(run: &Run, plan: &Plan, sim: &crate::prune::simulate::SimReport, ring: crate::fixed::Ring, progress: &(dyn Fn(usize) + Sync)) -> Result<EngineCheck> {
    use crate::mpc::estimate::{engine_shapes, secure_ratios, Protocol};
    use crate::secure::bert::{EngineConfig, LayerThresholds};
    use crate::secure::run::{run_all, EngineInput};
    let w = engine_weights(&run.loaded)?;
    let model = crate::secure::bert::EngineModel::from_weights(&w, &ring);
    let (thetas, betas, exponents, merge) = match &plan.masking {
        Masking::Hard { theta, beta, exponent, merge } => (theta.clone(), beta.clone(), exponent.clone(), *merge),
        Masking::Off => (None, None, None, false),
        _ => return Err(Error::Config("the engine runs thresholds, not keep-ratio schedules".into())),
    };
    let ecfg = EngineConfig { ring, truncation: crate::fixed::Truncation::Exact, thetas, betas, exponents, merge };
    let inputs: Vec<EngineInput> = run.data.iter().map(|e| EngineInput { ids: &e.input_ids, type_ids: &e.type_ids }).collect();
    let results = run_all(&w, &model, &ecfg, &inputs, progress).map_err(|e| Error::Model(e.to_string()))?;
    let labels: Vec<f32> = run.data.iter().map(|e| e.label).collect();
    let (preds, metrics) = crate::prune::check::engine_metrics(run.task, &results, &labels);
    let agreement = crate::prune::check::agreeing(run.task, &preds, &sim.predictions) as f64 / preds.len().max(1) as f64;
    let overflows = results.iter().map(|r| r.run_overflow.count()).sum::<u64>() + model.encode_overflow().count();
    let shapes = engine_shapes(&results, run.data.iter().map(|e| e.len()));
    let proto = Protocol { truncation: crate::fixed::Truncation::Exact, compaction: crate::mpc::sort::Compaction::Shuffle, suite: Default::default() };
    let secure = secure_ratios(&model, &LayerThresholds::from_config(&ecfg, model.num_layers()), proto, &shapes);
    Ok(EngineCheck { metrics, agreement, overflows, secure })
}

/// One value for every layer, or one per layer, checked to lie in `range`.
pub fn per_layer(values: &[f64], layers: usize, what: &str, ok: impl Fn(f64) -> bool, range: &str) -> Result<Vec<f64>> {
    let v = match values.len() {
        1 => vec![values[0]; layers],
        n if n == layers => values.to_vec(),
        n => return Err(Error::Config(format!("{what}: {n} values for a model of {layers} layers (give 1 or {layers})"))),
    };
    if let Some((l, x)) = v.iter().enumerate().find(|(_, x)| !ok(**x)) {
        return Err(Error::Config(format!("{what}: layer {l} has {x}, not {range}")));
    }
    Ok(v)
}

/// The fixed keep-ratio schedule (`--keep-ratio`): after layer l keep the
/// share R_l of each input's live tokens with the highest scores.
pub fn ratio_plan(keep: &[f64], layers: usize, physical: bool) -> Result<Plan> {
    let keep = per_layer(keep, layers, "--keep-ratio", |r| r > 0.0 && r <= 1.0, "a share in (0, 1]")?;
    Ok(Plan { numerics: Numerics::Approx, masking: Masking::Ratio { keep }, physical })
}

/// Hard thresholds on any model with no retraining (the zero-shot
/// baseline): θ per layer on the score of exponent p, no reduction.
pub fn zero_shot_plan(theta: &[f64], exponent: f64, layers: usize, physical: bool) -> Result<Plan> {
    let theta = per_layer(theta, layers, "--theta", |t| t.is_finite() && t >= 0.0, "a non-negative number")?;
    check_exponent(exponent, "--exponent")?;
    Ok(Plan { numerics: Numerics::Approx, masking: Masking::Hard { theta: Some(theta), beta: None, exponent: Some(vec![exponent; layers]), merge: false }, physical })
}

/// LTP's ramp: θ_l = θ_final · l / L (no pruning in layer 0).
pub fn theta_ramp(theta_final: f64, layers: usize) -> Vec<f64> {
    (0..layers).map(|l| theta_final * l as f64 / layers as f64).collect()
}

/// p must lie in [0, 1] (DESIGN.md §2).
pub fn check_exponent(p: f64, what: &str) -> Result<()> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(Error::Config(format!("{what} is {p}, not in [0, 1]")))
    }
}

/// The thresholds of a run: from `file` (checked against the model, the
/// task and the run's own p when it has one) or the run's own
/// `thresholds.safetensors`; `None` when it has neither.
pub fn load_thresholds(checkpoint: &Path, file: Option<&Path>, loaded: &Loaded, task: Task, weights_sha256: &str, own_cfg: Option<&PruneConfig>) -> Result<Option<ThresholdSet>> {
    let own_exponent = own_cfg.map(|c| c.score_exponent);
    let own = checkpoint.join(THRESHOLDS_FILE);
    let own = if own.is_file() {
        let t = Thresholds::new(loaded.cfg.num_hidden_layers, 0.0, 1.0)?;
        t.restore_from(&own)?;
        let (theta, beta) = t.values()?;
        Some(ThresholdSet { theta, beta, exponent: t.exponents()?, merge: own_cfg.is_some_and(|c| c.merge) })
    } else {
        None
    };
    let Some(f) = file else { return Ok(own) };
    let tf = ThresholdFile::load(f)?;
    tf.check_model(f, &loaded.cfg, weights_sha256)?;
    if tf.task != task.name() {
        return Err(Error::Field { file: f.to_path_buf(), field: "task".into(), msg: format!("{}, but the run is {}", tf.task, task.name()) });
    }
    let p = tf.exponents();
    // The run's own p: learned per layer, or its config's.
    let run_p = own.as_ref().map(|o| o.exponent.clone()).or_else(|| own_exponent.map(|e| vec![e; p.len()]));
    if let Some(rp) = run_p {
        if let Some(l) = (0..p.len()).find(|&l| (p[l] - rp[l]).abs() > 1e-6) {
            return Err(Error::Field {
                file: f.to_path_buf(),
                field: format!("layers[{l}].exponent"),
                msg: format!("p = {} but the run `{}` scores with p = {}: thresholds on another score", p[l], checkpoint.display(), rp[l]),
            });
        }
    }
    Ok(Some(ThresholdSet { theta: tf.thetas(), beta: tf.betas(), exponent: p, merge: tf.merge }))
}
