//! The steps the subcommands and the pipeline share: features, tokenizers, pre-training with validation
//! Recall@10, alignment and evaluation. Each is a thin composition of the library crates.

use crate::args::DataArgs;
use crate::artifacts;
use crate::config::PipelineConfig;
use anyhow::{Context, Result};
use reg4rec_data::features::{build_item_features, ItemFeatures};
use reg4rec_data::split::Stage;
use reg4rec_data::{Dataset, LeaveOneOut};
use reg4rec_infer::{evaluate, BeamSearch, EvalReport, InferConfig, ModelScorer};
use reg4rec_model::config::Mode;
use reg4rec_model::{PretrainOptions, PretrainReport, Reg4RecModel};
use reg4rec_recommender::model_dir;
use reg4rec_tokenizer::{Codes, FeatureMatrix, ItemIndex, ItemTokenizer, TokenizerConfig};
use reg4rec_tokenizer::{TokenizerKind, TokenizerReport};
use reg4rec_train::DataParallel;
use std::path::Path;

/// Item features: the user's own matrix when given, else built from the training interactions.
pub fn features(
    ds: &Dataset,
    split: &LeaveOneOut,
    cfg: &PipelineConfig,
    user: Option<&Path>,
) -> Result<ItemFeatures> {
    Ok(match user {
        Some(p) => ItemFeatures::load_user(p, ds.n_items())?,
        None => build_item_features(ds, split, &cfg.features)?,
    })
}

/// Trains the tokenizer of `kind` with its config section.
pub fn tokenizer(
    features: &ItemFeatures,
    kind: TokenizerKind,
    cfg: &PipelineConfig,
) -> Result<(Box<dyn ItemTokenizer>, TokenizerReport)> {
    let tcfg = match kind {
        TokenizerKind::Mpq => TokenizerConfig::Mpq(cfg.mpq.clone()),
        TokenizerKind::RqVae => TokenizerConfig::RqVae(cfg.rqvae.clone()),
    };
    Ok(reg4rec_tokenizer::train(
        FeatureMatrix::of(features)?,
        &tcfg,
    )?)
}

/// The codes a model of `mode` generates: TIGER needs ordered (RQ-VAE) codes; REG4Rec treats any tuple as a
/// set (RQ-VAE tuples included: that is the no-MPQ ablation).
pub fn codes_for(mode: Mode, codes: &Codes) -> Result<Codes> {
    match mode {
        Mode::Tiger if !codes.ordered => anyhow::bail!(
            "the tiger mode needs ordered RQ-VAE codes; this tokenizer's codes are unordered (MPQ)"
        ),
        Mode::Tiger => Ok(codes.clone()),
        Mode::Reg4rec => Ok(Codes::new(codes.m, codes.d, false, codes.tuples.clone())?),
    }
}

/// Evaluates a model on `stage` with the constrained beam search.
pub fn evaluate_model(
    model: &Reg4RecModel,
    codes: &Codes,
    split: &LeaveOneOut,
    stage: Stage,
    cfg: &InferConfig,
) -> Result<EvalReport> {
    let index = ItemIndex::new(codes)?;
    let search = BeamSearch::new(&index, cfg)?;
    let mut scorer = ModelScorer::new(model, codes)?;
    let _guard = tch::no_grad_guard();
    Ok(evaluate(
        &mut scorer,
        &search,
        split,
        stage,
        model.config().history_len,
    )?)
}

/// Pre-trains a model of `mode` on the codes of the tokenizer in `tokenizer` into `out`, selecting checkpoints by validation Recall@10 when the
/// pipeline section says so, and records the codes and the data source beside the run. With `dp`, this
/// process is one rank of a data-parallel run (only rank 0 writes to `out`).
#[allow(clippy::too_many_arguments)]
pub fn pretrain(
    data: &DataArgs,
    ds: &Dataset,
    split: &LeaveOneOut,
    tokenizer: &Path,
    mode: Mode,
    cfg: &PipelineConfig,
    out: &Path,
    resume: bool,
    dp: Option<DataParallel<'_>>,
) -> Result<PretrainReport> {
    let codes = codes_for(mode, &artifacts::tokenizer_codes(tokenizer)?)?;
    let mut model_cfg = cfg.model.clone();
    model_cfg.mode = mode;
    if dp.is_none_or(|d| d.is_main()) {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        artifacts::write_extras(out, data, ds, &codes, tokenizer)?;
    }
    let infer = cfg.infer.for_mode(mode);
    let valid = split.subset(cfg.pipeline.valid_users, cfg.pretrain.seed);
    let mut recall = |m: &Reg4RecModel| -> reg4rec_model::Result<f64> {
        let r = evaluate_model(m, &codes, &valid, Stage::Valid, &infer)
            .map_err(|e| reg4rec_model::ModelError::Callback(format!("{e:#}")))?;
        let x = &r.metrics;
        tracing::info!(
            users = valid.n_users(),
            r10 = format_args!("{:.4}", x.recall_10),
            n10 = format_args!("{:.4}", x.ndcg_10),
            r20 = format_args!("{:.4}", x.recall_20),
            repeat_bias = ?m.repeat_bias(),
            "validation beam search"
        );
        Ok(x.recall_10)
    };
    let opts = PretrainOptions {
        valid_metric: if cfg.pipeline.valid_recall {
            Some(&mut recall)
        } else {
            None
        },
        data_parallel: dp,
        ..Default::default()
    };
    let report = reg4rec_model::pretrain(
        ds,
        split,
        &codes,
        &model_cfg,
        &cfg.pretrain,
        out,
        resume,
        opts,
    )?;
    if dp.is_none_or(|d| d.is_main()) {
        reg4rec_recommender::seal(out)?;
    }
    Ok(report)
}

/// Aligns the pre-trained model in `pretrained` with PARS (+ MSRA) into `out`; with `dp`, as one rank of a
/// data-parallel run (only rank 0 writes to `out`).
pub fn align(
    ds: &Dataset,
    split: &LeaveOneOut,
    pretrained: &Path,
    align_cfg: &reg4rec_align::AlignConfig,
    out: &Path,
    resume: bool,
    dp: Option<DataParallel<'_>>,
) -> Result<reg4rec_align::AlignReport> {
    let (codes, _) = model_dir::read_extras(pretrained)?;
    if dp.is_none_or(|d| d.is_main()) {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        model_dir::copy_extras(pretrained, out)?;
    }
    let report = reg4rec_align::align(
        ds,
        split,
        &codes,
        pretrained,
        align_cfg,
        out,
        resume,
        reg4rec_align::AlignOptions { data_parallel: dp },
    )?;
    if dp.is_none_or(|d| d.is_main()) {
        reg4rec_recommender::seal(out)?;
    }
    Ok(report)
}
