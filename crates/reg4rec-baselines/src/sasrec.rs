//! SASRec (Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018) trained with full-softmax
//! cross-entropy instead of the paper's binary cross-entropy with one sampled negative (the variant of the public
//! re-runs that reach R@10 ≈ .086 on Amazon Beauty).
//!
//! A user's history (the most recent `max_len` items, oldest first) is embedded with a learned item table plus a
//! learned position table, passed through pre-LN transformer blocks with causal self-attention (a position never
//! sees a later one, nor padding), and the hidden state at every position is scored against the *same* item table
//! (tied output): the logit of item `i` after position `t` is `<h_t, E_i>`. With `tie_output = false` a separate
//! output table takes `E`'s place in the logits. Training uses the next item at every
//! position as the target; scoring a user uses the last position only.
//!
//! Histories are left-padded with the id `n_items` (item 0 is a real item), so the most recent item always sits at
//! the last position and gets the last position embedding, however long the batch is.

use crate::error::{BaselineError, Result};
use reg4rec_train::Schedule;
use serde::{Deserialize, Serialize};
use tch::nn;
use tch::{Kind, Tensor};

/// Model and training hyper-parameters of SASRec-CE. Defaults are the CPU preset's sizes (the usual good settings
/// on Amazon Beauty); `SasRecConfig::preset("smoke")` is a tiny one for tests and smoke runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SasRecConfig {
    /// History length L: how many most recent items the model reads. Default 50.
    pub max_len: usize,
    /// Width of embeddings and hidden states. Default 64.
    pub d_model: usize,
    /// Score items against the input item table (true, as the SASRec paper) or a separate output table.
    /// Default true: on Amazon Beauty at the cpu preset an untied table gave a higher validation NDCG@10 (0.0532
    /// vs 0.0521) but a lower Recall@10 (0.0871 vs 0.0914).
    pub tie_output: bool,
    /// Number of transformer blocks. Default 2.
    pub n_layers: usize,
    /// Attention heads per block (`d_model` must be a multiple). Default 1.
    pub n_heads: usize,
    /// Hidden width of the position-wise feed-forward layer. Default 256.
    pub d_ff: usize,
    /// Dropout on embeddings, attention weights and residual branches. Default 0.3.
    pub dropout: f64,
    /// AdamW learning rate (the peak: see `lr_schedule`). Default 3e-3.
    pub lr: f64,
    /// How the learning rate decays over the optimizer steps of `max_epochs` epochs after `warmup_steps`:
    /// `cosine`, `linear` (both down to `lr * final_lr_ratio` at the last step) or `constant` (the training
    /// engine's schedule, `reg4rec_train::Schedule`). `max_epochs` is then part of the schedule: a resumed run
    /// cannot change it. Default `cosine`.
    pub lr_schedule: Schedule,
    /// Linear warmup steps from 0 to `lr`. Default 0.
    pub warmup_steps: u64,
    /// The learning rate at the last step as a fraction of `lr`. Default 0.0.
    pub final_lr_ratio: f64,
    /// AdamW decoupled weight decay, applied to matrices and embedding tables (not to biases or LayerNorm).
    /// Default 0.0.
    pub weight_decay: f64,
    /// AdamW first-moment decay. Default 0.9.
    pub beta1: f64,
    /// AdamW second-moment decay. Default 0.98.
    pub beta2: f64,
    /// Users (sequences) per training batch. Default 128.
    pub batch_size: usize,
    /// Users per scoring batch (one matmul against the item table each). Default 1024.
    pub eval_batch_size: usize,
    /// Upper bound on training epochs. Default 200.
    pub max_epochs: usize,
    /// Early stopping: validations without a better NDCG@10 before training stops. Default 6.
    pub patience: usize,
    /// Validate (and checkpoint the best model) every this many epochs. Default 1.
    pub eval_every: usize,
    /// Wall-clock budget for training in seconds (0 = none); when it runs out training stops after the current
    /// epoch's validation and the best checkpoint is restored, as with early stopping. Default 0.
    pub time_budget_s: u64,
    /// libtorch intra-op threads for training (0 = libtorch's default, every core). On a machine shared with other
    /// work, also set `OMP_WAIT_POLICY=PASSIVE` in the environment, or busy-waiting threads slow every small op
    /// down several-fold. Default 0.
    pub threads: usize,
    /// Seed of the initialisation, the dropout masks and the batch order. Default 42.
    pub seed: u64,
    /// A learned scalar added to the logit of every item already in the history the model read
    /// (`reg4rec_train::repeat`), the same component as the generative model's `model.repeat_bias`. Default
    /// false (the published SASRec).
    pub repeat_bias: bool,
    /// Evaluation protocol: remove each user's own history items from the ranking (validation for early stopping
    /// and the final metrics alike). Default false: nothing is filtered, as REG4REC.md's protocol states.
    pub exclude_history: bool,
    /// Every item's embedding also reads its feature vector (the matrix the generative model's tokenizer reads,
    /// `reg4rec_data::features`): a learned linear projection of it (no bias) is added to the item's id
    /// embedding, in the input and (tied) output tables alike. The features travel with the weights. Default
    /// false (ids only, the published SASRec); the pipeline's `sasrec-ce-features` row sets it. (Left out of
    /// the serialized config when false, so configs and stage keys written before it existed still match.)
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub item_features: bool,
    /// Where the blocks normalise: `pre` (`x + f(LN(x))`, a final LayerNorm; GPT-2's and this crate's
    /// default) or `post` (`LN(x + f(x))` after a LayerNorm of the input embeddings, no final one: the BERT-style
    /// blocks of the FMLP-Rec / BSARec code whose SASRec rows are often quoted). Default `pre`.
    #[serde(skip_serializing_if = "Norm::is_pre")]
    pub norm: Norm,
    /// What one training row is: `sequences` (a user's training part, the next item a target at every
    /// position, as the SASRec paper) or `prefixes` (every prefix of it a row of its own, read right-aligned
    /// like a user at test time, its last item the only target: the FMLP-Rec / BSARec code behind the
    /// published full-softmax rows). `batch_size` counts rows either way. Default `sequences`.
    #[serde(skip_serializing_if = "Samples::is_sequences")]
    pub samples: Samples,
    /// How the model knows the order of the items: `absolute` (a learned embedding per position, added to the
    /// items; the SASRec paper) or `rotary` (queries and keys rotated by their position, RoFormer's RoPE, so
    /// attention reads only how far back an item is: every training position then sees its history as a user
    /// at test time does, which `samples = prefixes` buys with a row per position). Default `absolute`.
    #[serde(skip_serializing_if = "Position::is_absolute")]
    pub position: Position,
}

/// How SASRec encodes positions ([`SasRecConfig::position`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Position {
    /// A learned embedding per position (counted from the most recent item), added to the item embeddings.
    #[default]
    Absolute,
    /// Rotary position embeddings on the queries and keys of every attention layer.
    Rotary,
}

impl Position {
    fn is_absolute(&self) -> bool {
        *self == Position::Absolute
    }
}

/// Rotates the two halves of every query or key `x` [batch, heads, steps, d_head] by angles that grow with the
/// step (RoPE: `pos * 10000^(-i / half)` for pair i), so `<rot(q_t), rot(k_s)>` depends on `t - s` only.
fn rotary(x: &Tensor) -> Tensor {
    let size = x.size();
    let (t, dh) = (size[2], size[3]);
    let half = dh / 2;
    let opts = (Kind::Float, x.device());
    let inv_freq = (Tensor::arange(half, opts) * (-(10_000f64.ln()) / half as f64)).exp(); // [half]
    let angles = Tensor::arange(t, opts).unsqueeze(1) * inv_freq.unsqueeze(0); // [steps, half]
    let (cos, sin) = (angles.cos(), angles.sin());
    let (x1, x2) = (x.narrow(3, 0, half), x.narrow(3, half, half));
    Tensor::cat(&[&x1 * &cos - &x2 * &sin, &x1 * &sin + &x2 * &cos], 3)
}

/// The training rows of SASRec ([`SasRecConfig::samples`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Samples {
    /// One row per user, a target at every position.
    #[default]
    Sequences,
    /// One row per training position: the prefix up to it, the position's item the target.
    Prefixes,
}

impl Samples {
    fn is_sequences(&self) -> bool {
        *self == Samples::Sequences
    }
}

/// Placement of the LayerNorms in SASRec's blocks ([`SasRecConfig::norm`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    /// `x + f(LN(x))`, then a final LayerNorm.
    #[default]
    Pre,
    /// LayerNorm of the input embeddings, then `LN(x + f(x))`.
    Post,
}

impl Norm {
    fn is_pre(&self) -> bool {
        *self == Norm::Pre
    }
}

impl Default for SasRecConfig {
    fn default() -> Self {
        SasRecConfig {
            max_len: 50,
            d_model: 64,
            tie_output: true,
            n_layers: 2,
            n_heads: 1,
            d_ff: 256,
            dropout: 0.3,
            lr: 3e-3,
            lr_schedule: Schedule::Cosine,
            warmup_steps: 0,
            final_lr_ratio: 0.0,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.98,
            batch_size: 128,
            eval_batch_size: 1024,
            max_epochs: 200,
            patience: 6,
            eval_every: 1,
            time_budget_s: 0,
            threads: 0,
            seed: 42,
            repeat_bias: false,
            exclude_history: false,
            item_features: false,
            norm: Norm::Pre,
            samples: Samples::Sequences,
            position: Position::Absolute,
        }
    }
}

impl SasRecConfig {
    /// The `[sasrec]` section of preset `name` (`smoke`, `cpu`, `gpu`: [`reg4rec_data::presets`]), or
    /// `default` for [`SasRecConfig::default`].
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "default" => Ok(Self::default()),
            other => Ok(reg4rec_data::presets::section(other, "sasrec")?),
        }
    }

    /// Checks every field's range; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("max_len", self.max_len),
            ("d_model", self.d_model),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("d_ff", self.d_ff),
            ("batch_size", self.batch_size),
            ("eval_batch_size", self.eval_batch_size),
            ("max_epochs", self.max_epochs),
            ("patience", self.patience),
            ("eval_every", self.eval_every),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(BaselineError::config(field, "must be at least 1"));
            }
        }
        if !self.d_model.is_multiple_of(self.n_heads) {
            return Err(BaselineError::config(
                "n_heads",
                format!(
                    "d_model {} is not a multiple of n_heads {}",
                    self.d_model, self.n_heads
                ),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(BaselineError::config("dropout", "must be in [0, 1)"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(BaselineError::config("lr", "must be a positive number"));
        }
        if !(0.0..=1.0).contains(&self.final_lr_ratio) {
            return Err(BaselineError::config("final_lr_ratio", "must be in [0, 1]"));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(BaselineError::config("weight_decay", "must be >= 0"));
        }
        for (field, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(BaselineError::config(field, "must be in [0, 1)"));
            }
        }
        Ok(())
    }
}

/// Initialisation of every matrix and table (GPT-2 style: N(0, 0.02), zero biases, unit LayerNorm gains).
const INIT_STD: f64 = 0.02;

fn linear(p: nn::Path, d_in: usize, d_out: usize) -> nn::Linear {
    let c = nn::LinearConfig {
        ws_init: nn::Init::Randn {
            mean: 0.0,
            stdev: INIT_STD,
        },
        bs_init: Some(nn::Init::Const(0.0)),
        bias: true,
    };
    nn::linear(p, d_in as i64, d_out as i64, c)
}

fn layer_norm(p: nn::Path, d: usize) -> nn::LayerNorm {
    nn::layer_norm(p, vec![d as i64], Default::default())
}

/// Multi-head causal self-attention.
#[derive(Debug)]
struct SelfAttention {
    /// [d_model] -> [3 * d_model]: queries, keys, values.
    qkv: nn::Linear,
    /// [d_model] -> [d_model].
    out: nn::Linear,
    n_heads: i64,
    dropout: f64,
    rotary: bool,
}

impl SelfAttention {
    fn new(p: nn::Path, cfg: &SasRecConfig) -> Self {
        SelfAttention {
            qkv: linear(&p / "qkv", cfg.d_model, 3 * cfg.d_model),
            out: linear(&p / "out", cfg.d_model, cfg.d_model),
            n_heads: cfg.n_heads as i64,
            dropout: cfg.dropout,
            rotary: cfg.position == Position::Rotary,
        }
    }

    /// `x`: [batch, steps, d_model]; `allowed`: [batch, 1, steps, steps] bool (query row may read key column).
    fn forward(&self, x: &Tensor, allowed: &Tensor, train: bool) -> Tensor {
        let (b, t, d) = x
            .size3()
            .expect("hidden states are [batch, steps, d_model]");
        let dh = d / self.n_heads;
        // [3, batch, heads, steps, d_head]
        let qkv = x
            .apply(&self.qkv)
            .view([b, t, 3, self.n_heads, dh])
            .permute([2, 0, 3, 1, 4]);
        let (q, k, v) = match self.rotary {
            true => (rotary(&qkv.get(0)), rotary(&qkv.get(1)), qkv.get(2)),
            false => (qkv.get(0), qkv.get(1), qkv.get(2)),
        };
        let p = if train { self.dropout } else { 0.0 };
        // [batch, heads, steps, d_head]
        let y =
            Tensor::scaled_dot_product_attention(&q, &k, &v, Some(allowed), p, false, None, false);
        y.transpose(1, 2)
            .contiguous()
            .view([b, t, d])
            .apply(&self.out)
    }
}

/// Position-wise feed-forward layer.
#[derive(Debug)]
struct FeedForward {
    /// [d_model] -> [d_ff].
    fc1: nn::Linear,
    /// [d_ff] -> [d_model].
    fc2: nn::Linear,
    dropout: f64,
}

impl FeedForward {
    fn new(p: nn::Path, cfg: &SasRecConfig) -> Self {
        FeedForward {
            fc1: linear(&p / "fc1", cfg.d_model, cfg.d_ff),
            fc2: linear(&p / "fc2", cfg.d_ff, cfg.d_model),
            dropout: cfg.dropout,
        }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        x.apply(&self.fc1)
            .gelu("none")
            .dropout(self.dropout, train)
            .apply(&self.fc2)
    }
}

/// One block: pre-LN `x + drop(attn(ln1(x)))`, then `x + drop(ffn(ln2(x)))`; post-LN
/// `ln1(x + drop(attn(x)))`, then `ln2(x + drop(ffn(x)))`.
#[derive(Debug)]
struct Block {
    ln1: nn::LayerNorm,
    attn: SelfAttention,
    ln2: nn::LayerNorm,
    ffn: FeedForward,
    dropout: f64,
    norm: Norm,
}

impl Block {
    fn new(p: nn::Path, cfg: &SasRecConfig) -> Self {
        Block {
            ln1: layer_norm(&p / "ln1", cfg.d_model),
            attn: SelfAttention::new(&p / "attn", cfg),
            ln2: layer_norm(&p / "ln2", cfg.d_model),
            ffn: FeedForward::new(&p / "ffn", cfg),
            dropout: cfg.dropout,
            norm: cfg.norm,
        }
    }

    fn forward(&self, x: &Tensor, allowed: &Tensor, train: bool) -> Tensor {
        match self.norm {
            Norm::Pre => {
                let a = self.attn.forward(&x.apply(&self.ln1), allowed, train);
                let x = x + a.dropout(self.dropout, train);
                let f = self.ffn.forward(&x.apply(&self.ln2), train);
                x + f.dropout(self.dropout, train)
            }
            Norm::Post => {
                let a = self.attn.forward(x, allowed, train);
                let x = (x + a.dropout(self.dropout, train)).apply(&self.ln1);
                let f = self.ffn.forward(&x, train);
                (x + f.dropout(self.dropout, train)).apply(&self.ln2)
            }
        }
    }
}

/// An item's feature vector as part of its embedding: `values @ proj` is added to the id embeddings.
#[derive(Debug)]
struct FeatureInput {
    /// [n_items, n_features], not trained (a buffer saved with the weights).
    values: Tensor,
    /// [n_features, d_model].
    proj: Tensor,
}

/// The SASRec network. Weights: `item_emb/weight` [n_items + 1, d_model] (last row = padding),
/// `pos_emb/weight` [max_len, d_model], `layers/{i}/...`, `ln_f/{weight,bias}` (`ln_emb` with post-LN
/// blocks), with an untied output
/// (`tie_output = false`) `out_emb/weight` [n_items, d_model], and with `item_features`
/// `features/{values,proj}` ([n_items, n_features] not trained, [n_features, d_model]).
#[derive(Debug)]
pub struct SasRec {
    /// [n_items + 1, d_model]; row `n_items` is the padding id. Also the output layer unless `out_emb` is set.
    item_emb: nn::Embedding,
    /// [n_items, d_model]: the output item table when it is not tied to `item_emb`.
    out_emb: Option<Tensor>,
    /// [1]: the repeat bias (`repeat_bias`).
    repeat_bias: Option<Tensor>,
    /// The item features and their projection (`item_features`).
    features: Option<FeatureInput>,
    /// [max_len, d_model].
    pos_emb: Option<nn::Embedding>,
    layers: Vec<Block>,
    /// The final LayerNorm (pre-LN blocks) or the input embeddings' (post-LN).
    ln_f: nn::LayerNorm,
    norm: Norm,
    n_items: i64,
    max_len: i64,
    dropout: f64,
}

impl SasRec {
    /// Creates the weights under `p`. `cfg` must have passed [`SasRecConfig::validate`]. `n_features`: the
    /// width of the item feature matrix when `cfg.item_features` (the values start at zero: load them with
    /// [`Self::set_features`] or from a checkpoint).
    pub fn new(
        p: &nn::Path,
        cfg: &SasRecConfig,
        n_items: usize,
        n_features: Option<usize>,
    ) -> Self {
        let emb = || nn::EmbeddingConfig {
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: INIT_STD,
            },
            ..Default::default()
        };
        SasRec {
            item_emb: nn::embedding(
                p / "item_emb",
                n_items as i64 + 1,
                cfg.d_model as i64,
                emb(),
            ),
            pos_emb: (cfg.position == Position::Absolute).then(|| {
                nn::embedding(p / "pos_emb", cfg.max_len as i64, cfg.d_model as i64, emb())
            }),
            layers: (0..cfg.n_layers)
                .map(|i| Block::new(p / "layers" / i, cfg))
                .collect(),
            ln_f: match cfg.norm {
                Norm::Pre => layer_norm(p / "ln_f", cfg.d_model),
                Norm::Post => layer_norm(p / "ln_emb", cfg.d_model),
            },
            norm: cfg.norm,
            // Created last, so a tied model's initial weights do not depend on this option.
            out_emb: (!cfg.tie_output).then(|| {
                (p / "out_emb").var(
                    "weight",
                    &[n_items as i64, cfg.d_model as i64],
                    nn::Init::Randn {
                        mean: 0.0,
                        stdev: INIT_STD,
                    },
                )
            }),
            repeat_bias: cfg.repeat_bias.then(|| p.zeros("repeat_bias", &[1])),
            // Created last, so a model without features draws the same initial weights.
            features: n_features.map(|f| FeatureInput {
                values: (p / "features").zeros_no_train("values", &[n_items as i64, f as i64]),
                proj: (p / "features").var(
                    "proj",
                    &[f as i64, cfg.d_model as i64],
                    nn::Init::Randn {
                        mean: 0.0,
                        stdev: INIT_STD,
                    },
                ),
            }),
            n_items: n_items as i64,
            max_len: cfg.max_len as i64,
            dropout: cfg.dropout,
        }
    }

    /// Number of real items (the padding id).
    pub fn pad_id(&self) -> i64 {
        self.n_items
    }

    /// The item table `[n_items + 1, d_model]` (last row = padding): the id embeddings, plus the projected
    /// features of every real item with `item_features`. Compute it once per step and hand it to
    /// [`Self::forward_with`] and [`Self::logits_with`].
    pub fn item_table(&self) -> Tensor {
        match &self.features {
            None => self.item_emb.ws.shallow_clone(),
            Some(f) => {
                let ids = &self.item_emb.ws;
                let real = ids.narrow(0, 0, self.n_items) + f.values.matmul(&f.proj);
                Tensor::cat(&[real, ids.narrow(0, self.n_items, 1)], 0)
            }
        }
    }

    /// Loads the item feature matrix (row-major `[n_items, n_features]`) of a model built with `item_features`.
    pub fn set_features(&mut self, values: &[f32]) -> Result<()> {
        let f = self.features.as_mut().ok_or_else(|| {
            BaselineError::config("item_features", "the model was built without item features")
        })?;
        let size = f.values.size();
        if values.len() as i64 != size[0] * size[1] {
            return Err(BaselineError::input(
                "features",
                format!(
                    "{} values do not fill {} items x {} features",
                    values.len(),
                    size[0],
                    size[1]
                ),
            ));
        }
        tch::no_grad(|| {
            f.values.copy_(
                &Tensor::from_slice(values)
                    .view([size[0], size[1]])
                    .to_device(f.values.device()),
            )
        });
        Ok(())
    }

    /// Width of the item feature matrix the model reads (`None` without `item_features`).
    pub fn n_features(&self) -> Option<usize> {
        self.features.as_ref().map(|f| f.values.size()[1] as usize)
    }

    /// Hidden states of left-padded histories `items` [batch, steps] (int64, `steps <= max_len`, padding =
    /// [`Self::pad_id`]) -> [batch, steps, d_model]. Position `t` reads positions `<= t` that are not padding.
    pub fn forward(&self, items: &Tensor, train: bool) -> Tensor {
        self.forward_with(items, &self.item_table(), train)
    }

    /// [`Self::forward`] with the item table of [`Self::item_table`].
    pub fn forward_with(&self, items: &Tensor, table: &Tensor, train: bool) -> Tensor {
        let (_, t) = items.size2().expect("item ids are [batch, steps]");
        assert!(
            t <= self.max_len,
            "{t} steps exceed max_len {}",
            self.max_len
        );
        let x = Tensor::embedding(table, items, -1, false, false); // [batch, steps, d_model]
        let x = match &self.pos_emb {
            // Left padding: the last step is always position max_len - 1.
            Some(pos_emb) => {
                let pos = Tensor::arange_start(
                    self.max_len - t,
                    self.max_len,
                    (Kind::Int64, items.device()),
                );
                x + pos.apply(pos_emb).unsqueeze(0)
            }
            None => x,
        };
        let x = match self.norm {
            Norm::Pre => x,
            Norm::Post => x.apply(&self.ln_f),
        };
        let mut x = x.dropout(self.dropout, train);
        let allowed = attention_mask(items, self.n_items);
        for layer in &self.layers {
            x = layer.forward(&x, &allowed, train);
        }
        match self.norm {
            Norm::Pre => x.apply(&self.ln_f),
            Norm::Post => x,
        }
    }

    /// Scores of every real item for hidden states `h` [..., d_model] -> [..., n_items] (against the input item
    /// table when tied, else the output table).
    pub fn logits(&self, h: &Tensor) -> Tensor {
        self.logits_with(h, &self.item_table())
    }

    /// [`Self::logits`] with the item table of [`Self::item_table`].
    pub fn logits_with(&self, h: &Tensor, table: &Tensor) -> Tensor {
        match &self.out_emb {
            Some(out) => h.matmul(&out.tr()),
            None => h.matmul(&table.narrow(0, 0, self.n_items).tr()),
        }
    }

    /// [`Self::logits_with`] `[N, n_items]` with the repeat bias (when the model has one) at the `seen` (row,
    /// item) pairs (`reg4rec_train::repeat::seen_pairs`, on the logits' device).
    pub fn logits_seen(&self, h: &Tensor, table: &Tensor, seen: &(Tensor, Tensor)) -> Tensor {
        let logits = self.logits_with(h, table);
        match &self.repeat_bias {
            Some(b) => reg4rec_train::repeat::add_repeat_bias(logits, seen, b),
            None => logits,
        }
    }

    /// Scores of every item after the last position of each left-padded history [batch, steps] -> [batch, n_items],
    /// with the repeat bias at the `seen` pairs of each row's items; `table`: [`Self::item_table`].
    pub fn score_last(&self, items: &Tensor, table: &Tensor, seen: &(Tensor, Tensor)) -> Tensor {
        let h = self.forward_with(items, table, false); // [batch, steps, d_model]
        let last = h.select(1, -1); // [batch, d_model]
        self.logits_seen(&last, table, seen)
    }
}

/// Which key a query may attend to: earlier-or-same steps that are not padding, and always itself (so a padding
/// query has one key and softmax stays finite). [batch, steps] -> [batch, 1, steps, steps] bool.
fn attention_mask(items: &Tensor, pad_id: i64) -> Tensor {
    let (_, t) = items.size2().expect("item ids are [batch, steps]");
    let causal = Tensor::ones([t, t], (Kind::Bool, items.device())).tril(0); // [steps, steps]
    let eye = Tensor::eye(t, (Kind::Bool, items.device()));
    let real_key = items.ne(pad_id).unsqueeze(1); // [batch, 1, steps]
    let allowed = causal
        .unsqueeze(0)
        .logical_and(&real_key.logical_or(&eye.unsqueeze(0)));
    allowed.unsqueeze(1)
}
