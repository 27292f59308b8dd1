//! The REG4Rec generative model (spec section 3, figure 2 bottom right): an encoder-decoder transformer over
//! semantic item tokens.
//!
//! - Encoder input: for each of the last `L` history items `<SEP>` followed by its M tokens in codebook order,
//!   left-padded with `<PAD>` to `S = L * (M + 1)` positions (the most recent item always ends at position
//!   `S - 1`). Embedding = token + position + codebook type (the type of a codebook token is its codebook, the
//!   specials share type M).
//! - Decoder input: `<BOS>` then the tokens generated so far (at most M); causal self-attention and
//!   cross-attention to the encoder memory. Same three embeddings (decoder positions are their own table).
//! - Heads on every decoder position: next-token logits over the whole vocabulary and category logits. The
//!   used-codebook / EOS mask is applied by the caller ([`crate::mask::codebook_mask`]).
//! - Layers are **pre-norm** (LayerNorm before each attention / feed-forward block, residual around it, a final
//!   LayerNorm on each stack), N/2 encoder and N/2 decoder layers, GELU feed-forward.
//! - Optional bf16 compute: linear layers and attention run in bf16 while weights, norms, softmax and losses
//!   stay f32 (libtorch's autocast is CUDA-only in tch, so this is done explicitly and works on CPU too).
//! - The transformer layers' projections (`q`, `k`, `v`, `o`, `up`, `down`) are LADQ layers
//!   ([`reg4rec_precision::Linear`], same weight names as `nn::linear`) whose precision (fp32, bf16 or fp8) is
//!   set per layer through [`Reg4RecModel::ladq_layers`]; the heads, embeddings and norms are not.

use crate::batch::history_token_ids;
use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::vocab::{Vocab, PAD};
use reg4rec_precision::{LayerRegistry, Linear, Precision};
use reg4rec_tokenizer::index::Codes;
use tch::{nn, Device, Kind, Tensor};

/// Per-call forward settings.
#[derive(Debug, Clone, Copy)]
struct Ctx {
    train: bool,
    bf16: bool,
    dropout: f64,
}

impl Ctx {
    fn drop(&self, x: Tensor) -> Tensor {
        if self.train && self.dropout > 0.0 {
            x.dropout(self.dropout, true)
        } else {
            x
        }
    }
}

/// `x W^T + b`, in bf16 when asked (result back in f32).
fn linear(l: &nn::Linear, x: &Tensor, ctx: Ctx) -> Tensor {
    if ctx.bf16 {
        let w = l.ws.to_kind(Kind::BFloat16);
        let b = l.bs.as_ref().map(|b| b.to_kind(Kind::BFloat16));
        x.to_kind(Kind::BFloat16)
            .linear(&w, b.as_ref())
            .to_kind(Kind::Float)
    } else {
        x.linear(&l.ws, l.bs.as_ref())
    }
}

/// Multi-head attention (self or cross) with `q`, `k`, `v`, `o` projections `[d_model, d_model]`.
#[derive(Debug)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    n_heads: i64,
}

impl Attention {
    fn new(p: nn::Path, cfg: &ModelConfig, reg: &LayerRegistry) -> Self {
        let d = cfg.d_model as i64;
        let lin = |name: &str| reg4rec_precision::linear(&p / name, d, d, Default::default(), reg);
        Attention {
            q: lin("q"),
            k: lin("k"),
            v: lin("v"),
            o: lin("o"),
            n_heads: cfg.n_heads as i64,
        }
    }

    /// `x`: queries `[B, T, d]`; `kv`: keys/values `[B, S, d]`; `attend`: `[B, 1, 1, S]` bool, true where a key
    /// may be attended; `causal`: mask future positions (self-attention only). Returns `[B, T, d]`.
    fn forward(
        &self,
        x: &Tensor,
        kv: &Tensor,
        attend: Option<&Tensor>,
        causal: bool,
        ctx: Ctx,
    ) -> Tensor {
        let (b, t, d) = (x.size()[0], x.size()[1], x.size()[2]);
        let s = kv.size()[1];
        let h = self.n_heads;
        let split = |y: Tensor, len: i64| y.view([b, len, h, d / h]).transpose(1, 2); // [B, h, len, d/h]
        let q = split(self.q.forward(x), t);
        let k = split(self.k.forward(kv), s);
        let v = split(self.v.forward(kv), s);
        let (q, k, v) = if ctx.bf16 {
            (
                q.to_kind(Kind::BFloat16),
                k.to_kind(Kind::BFloat16),
                v.to_kind(Kind::BFloat16),
            )
        } else {
            (q, k, v)
        };
        let p = if ctx.train { ctx.dropout } else { 0.0 };
        let y =
            Tensor::scaled_dot_product_attention(&q, &k, &v, attend, p, causal, None::<f64>, false);
        let y = y
            .to_kind(Kind::Float)
            .transpose(1, 2)
            .contiguous()
            .view([b, t, d]);
        self.o.forward(&y)
    }
}

/// GELU feed-forward `d_model -> d_ff -> d_model`.
#[derive(Debug)]
struct FeedForward {
    up: Linear,
    down: Linear,
}

impl FeedForward {
    fn new(p: nn::Path, cfg: &ModelConfig, reg: &LayerRegistry) -> Self {
        let (d, f) = (cfg.d_model as i64, cfg.d_ff as i64);
        FeedForward {
            up: reg4rec_precision::linear(&p / "up", d, f, Default::default(), reg),
            down: reg4rec_precision::linear(&p / "down", f, d, Default::default(), reg),
        }
    }

    fn forward(&self, x: &Tensor, ctx: Ctx) -> Tensor {
        let h = ctx.drop(self.up.forward(x).gelu("none"));
        self.down.forward(&h)
    }
}

fn layer_norm(p: nn::Path, d: usize) -> nn::LayerNorm {
    nn::layer_norm(p, vec![d as i64], Default::default())
}

/// Pre-norm encoder layer: self-attention then feed-forward.
#[derive(Debug)]
struct EncoderLayer {
    norm1: nn::LayerNorm,
    attn: Attention,
    norm2: nn::LayerNorm,
    ffn: FeedForward,
}

impl EncoderLayer {
    fn new(p: nn::Path, cfg: &ModelConfig, reg: &LayerRegistry) -> Self {
        EncoderLayer {
            norm1: layer_norm(&p / "norm1", cfg.d_model),
            attn: Attention::new(&p / "attn", cfg, reg),
            norm2: layer_norm(&p / "norm2", cfg.d_model),
            ffn: FeedForward::new(&p / "ffn", cfg, reg),
        }
    }

    fn forward(&self, x: &Tensor, attend: &Tensor, ctx: Ctx) -> Tensor {
        let h = x.apply(&self.norm1);
        let x = x + ctx.drop(self.attn.forward(&h, &h, Some(attend), false, ctx));
        let h = x.apply(&self.norm2);
        &x + ctx.drop(self.ffn.forward(&h, ctx))
    }
}

/// Pre-norm decoder layer: causal self-attention, cross-attention to the encoder memory, feed-forward.
#[derive(Debug)]
struct DecoderLayer {
    norm1: nn::LayerNorm,
    self_attn: Attention,
    norm2: nn::LayerNorm,
    cross_attn: Attention,
    norm3: nn::LayerNorm,
    ffn: FeedForward,
}

impl DecoderLayer {
    fn new(p: nn::Path, cfg: &ModelConfig, reg: &LayerRegistry) -> Self {
        DecoderLayer {
            norm1: layer_norm(&p / "norm1", cfg.d_model),
            self_attn: Attention::new(&p / "self_attn", cfg, reg),
            norm2: layer_norm(&p / "norm2", cfg.d_model),
            cross_attn: Attention::new(&p / "cross_attn", cfg, reg),
            norm3: layer_norm(&p / "norm3", cfg.d_model),
            ffn: FeedForward::new(&p / "ffn", cfg, reg),
        }
    }

    /// `x`: `[B * g, T, d]` where rows `i * g .. (i + 1) * g` attend to memory row `i` (`[B, S, d]`): the
    /// cross-attention stacks a memory row's `g` decoder rows along the query axis (queries do not interact
    /// there), so the memory's keys and values are computed once per row, not once per decoder row.
    fn forward(&self, x: &Tensor, memory: &Tensor, attend: &Tensor, g: i64, ctx: Ctx) -> Tensor {
        let h = x.apply(&self.norm1);
        let x = x + ctx.drop(self.self_attn.forward(&h, &h, None, true, ctx));
        let h = x.apply(&self.norm2);
        let (n, t, d) = (h.size()[0], h.size()[1], h.size()[2]);
        let x = &x
            + ctx.drop(
                self.cross_attn
                    .forward(&h.view([n / g, g * t, d]), memory, Some(attend), false, ctx)
                    .view([n, t, d]),
            );
        let h = x.apply(&self.norm3);
        &x + ctx.drop(self.ffn.forward(&h, ctx))
    }
}

/// Encoder output for a batch of histories.
#[derive(Debug)]
pub struct Encoded {
    /// `[B, S, d_model]`.
    pub memory: Tensor,
    /// `[B, S]` bool, true at `<PAD>` positions.
    pub pad_mask: Tensor,
}

/// Keys that may be attended, from a `[B, S]` padding mask: `[B, 1, 1, S]` bool. The last position is always
/// allowed so that an empty history (all padding) still gives finite attention.
fn attend_mask(pad_mask: &Tensor) -> Tensor {
    let s = pad_mask.size()[1];
    let last = Tensor::arange(s, (Kind::Int64, pad_mask.device())).eq(s - 1);
    pad_mask
        .logical_not()
        .logical_or(&last)
        .unsqueeze(1)
        .unsqueeze(1)
}

impl Encoded {
    /// Rows `idx` (`[B']` i64) of the batch, e.g. one row per beam.
    pub fn repeat_rows(&self, idx: &Tensor) -> Encoded {
        Encoded {
            memory: self.memory.index_select(0, idx),
            pad_mask: self.pad_mask.index_select(0, idx),
        }
    }

    pub fn batch_size(&self) -> i64 {
        self.memory.size()[0]
    }

    /// A copy detached from the autograd graph.
    pub fn detach(&self) -> Encoded {
        Encoded {
            memory: self.memory.detach(),
            pad_mask: self.pad_mask.shallow_clone(),
        }
    }
}

/// Decoder output.
#[derive(Debug)]
pub struct Decoded {
    /// `[B, T, vocab]`: logits of the token following each decoder position (unmasked).
    pub token_logits: Tensor,
    /// `[B, T, n_categories]`: category logits at each decoder position.
    pub category_logits: Tensor,
}

/// The encoder-decoder model. Owns its variables (`var_store()`), whose names follow the module tree:
/// `tok_emb.weight`, `encoder.layers.0.attn.q.weight`, `decoder.layers.1.cross_attn.o.bias`, `token_head.weight`, ...
#[derive(Debug)]
pub struct Reg4RecModel {
    vs: nn::VarStore,
    cfg: ModelConfig,
    vocab: Vocab,
    n_categories: usize,
    bf16: bool,
    ladq: LayerRegistry,        // the LADQ projections of every transformer layer
    token_types: Tensor,        // [vocab] i64: codebook of each token, M for specials
    tok_emb: nn::Embedding,     // [vocab, d]
    type_emb: nn::Embedding,    // [M + 1, d]
    enc_pos: nn::Embedding,     // [L * (M + 1), d]
    dec_pos: nn::Embedding,     // [M + 1, d]
    encoder: Vec<EncoderLayer>, // N/2
    enc_norm: nn::LayerNorm,
    decoder: Vec<DecoderLayer>, // N/2
    dec_norm: nn::LayerNorm,
    token_head: nn::Linear,    // [d] -> [vocab]
    category_head: nn::Linear, // [d] -> [n_categories]
}

impl Reg4RecModel {
    /// A freshly initialised model (seed with `tch::manual_seed` first for reproducible weights).
    pub fn new(
        cfg: &ModelConfig,
        vocab: Vocab,
        n_categories: usize,
        device: Device,
    ) -> Result<Self> {
        cfg.validate()?;
        if vocab.m == 0 || vocab.d == 0 {
            return Err(ModelError::Input(format!(
                "empty vocabulary: m = {}, d = {}",
                vocab.m, vocab.d
            )));
        }
        if n_categories == 0 {
            return Err(ModelError::Input("the dataset has no categories".into()));
        }
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let d = cfg.d_model as i64;
        let m = vocab.m as i64;
        let emb_cfg = nn::EmbeddingConfig {
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
            ..Default::default()
        };
        let emb = |name: &str, n: i64| nn::embedding(&root / name, n, d, emb_cfg);
        let half = cfg.n_layers / 2;
        let enc = &root / "encoder";
        let dec = &root / "decoder";
        let ladq = LayerRegistry::new();
        let model = Reg4RecModel {
            token_types: vocab.token_types(device),
            tok_emb: emb("tok_emb", vocab.size() as i64),
            type_emb: emb("type_emb", m + 1),
            enc_pos: emb("enc_pos", cfg.history_len as i64 * (m + 1)),
            dec_pos: emb("dec_pos", m + 1),
            encoder: (0..half)
                .map(|i| EncoderLayer::new(&enc / "layers" / i, cfg, &ladq))
                .collect(),
            enc_norm: layer_norm(&enc / "norm", cfg.d_model),
            decoder: (0..half)
                .map(|i| DecoderLayer::new(&dec / "layers" / i, cfg, &ladq))
                .collect(),
            dec_norm: layer_norm(&dec / "norm", cfg.d_model),
            token_head: nn::linear(
                &root / "token_head",
                d,
                vocab.size() as i64,
                Default::default(),
            ),
            category_head: nn::linear(
                &root / "category_head",
                d,
                n_categories as i64,
                Default::default(),
            ),
            vs,
            cfg: cfg.clone(),
            vocab,
            n_categories,
            bf16: false,
            ladq,
        };
        Ok(model)
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn vocab(&self) -> Vocab {
        self.vocab
    }

    pub fn n_categories(&self) -> usize {
        self.n_categories
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    /// Number of scalar parameters.
    pub fn n_parameters(&self) -> i64 {
        self.vs
            .trainable_variables()
            .iter()
            .map(Tensor::numel)
            .sum::<usize>() as i64
    }

    /// Run linear layers and attention in bf16 from now on (see the module doc); `false` puts every linear layer
    /// back to f32 (including LADQ layers that a policy had set to another precision).
    pub fn set_bf16(&mut self, on: bool) {
        self.bf16 = on;
        self.ladq
            .set_all(if on { Precision::Bf16 } else { Precision::Fp32 });
    }

    /// The LADQ layers (every transformer projection), to set their precisions or capture K-FAC statistics.
    pub fn ladq_layers(&self) -> &LayerRegistry {
        &self.ladq
    }

    /// Encoder positions `S = L * (M + 1)`.
    pub fn max_history_positions(&self) -> i64 {
        (self.cfg.history_len * (self.vocab.m + 1)) as i64
    }

    fn ctx(&self, train: bool) -> Ctx {
        Ctx {
            train,
            bf16: self.bf16,
            dropout: self.cfg.dropout,
        }
    }

    /// Token + codebook-type + position embeddings of `tokens` `[B, T]`, positions `offset..offset + T`.
    fn embed(&self, tokens: &Tensor, pos: &nn::Embedding, offset: i64, ctx: Ctx) -> Tensor {
        let t = tokens.size()[1];
        let types = self
            .token_types
            .index_select(0, &tokens.flatten(0, -1))
            .view_as(tokens);
        let positions = Tensor::arange_start(offset, offset + t, (Kind::Int64, tokens.device()));
        let x = tokens.apply(&self.tok_emb)
            + types.apply(&self.type_emb)
            + positions.apply(pos).unsqueeze(0);
        ctx.drop(x)
    }

    /// Encodes histories `[B, S]` i64 (S <= L * (M + 1); see [`Self::history_tokens`]).
    pub fn encode(&self, history: &Tensor, train: bool) -> Encoded {
        let ctx = self.ctx(train);
        let s = history.size()[1];
        let p = self.max_history_positions();
        assert!(s <= p, "history of {s} positions exceeds L * (M + 1) = {p}");
        let pad_mask = history.eq(PAD); // [B, S]
        let attend = attend_mask(&pad_mask);
        let mut x = self.embed(history, &self.enc_pos, p - s, ctx); // [B, S, d]
        for layer in &self.encoder {
            x = layer.forward(&x, &attend, ctx);
        }
        Encoded {
            memory: x.apply(&self.enc_norm),
            pad_mask,
        }
    }

    /// Decodes `dec_input` `[B, T]` i64 (`<BOS>` then the tokens so far, T <= M + 1) against `enc` (same B).
    pub fn decode(&self, enc: &Encoded, dec_input: &Tensor, train: bool) -> Decoded {
        let ctx = self.ctx(train);
        let t = dec_input.size()[1];
        assert!(
            t as usize <= self.vocab.m + 1,
            "decoder input of {t} positions exceeds M + 1"
        );
        let attend = attend_mask(&enc.pad_mask);
        let mut x = self.embed(dec_input, &self.dec_pos, 0, ctx); // [B, T, d]
        for layer in &self.decoder {
            x = layer.forward(&x, &enc.memory, &attend, 1, ctx);
        }
        let h = x.apply(&self.dec_norm);
        Decoded {
            token_logits: linear(&self.token_head, &h, ctx),
            category_logits: linear(&self.category_head, &h, ctx),
        }
    }

    /// Beam-search decoding: `g` decoder rows per encoded row, without repeating the memory. `dec_input` is
    /// `[B * g, T]` (B = `enc`'s batch), rows `i * g .. (i + 1) * g` belonging to `enc` row `i`. Equals
    /// `decode(&enc.repeat_rows(&(0..B).repeat_interleave(g)), dec_input)` restricted to the last position
    /// (outputs `[B * g, 1, vocab]` and `[B * g, 1, n_categories]`), at a fraction of the cost: the memory's
    /// cross-attention keys/values are computed once per encoded row and the heads run on one position.
    pub fn decode_last_grouped(
        &self,
        enc: &Encoded,
        dec_input: &Tensor,
        g: i64,
        train: bool,
    ) -> Result<Decoded> {
        let (n, t) = (dec_input.size()[0], dec_input.size()[1]);
        if g < 1 || n != enc.batch_size() * g || t < 1 || t as usize > self.vocab.m + 1 {
            return Err(ModelError::Shape {
                what: format!("decoder input for {g} rows per encoded row"),
                expected: vec![enc.batch_size() * g, (self.vocab.m + 1) as i64],
                found: dec_input.size(),
            });
        }
        let ctx = self.ctx(train);
        let attend = attend_mask(&enc.pad_mask);
        let mut x = self.embed(dec_input, &self.dec_pos, 0, ctx); // [B * g, T, d]
        for layer in &self.decoder {
            x = layer.forward(&x, &enc.memory, &attend, g, ctx);
        }
        let h = x.narrow(1, t - 1, 1).apply(&self.dec_norm); // [B * g, 1, d]
        Ok(Decoded {
            token_logits: linear(&self.token_head, &h, ctx),
            category_logits: linear(&self.category_head, &h, ctx),
        })
    }

    /// Encoder input `[B, L * (M + 1)]` i64 on the model's device from item histories (oldest first; only the
    /// last L items are used).
    pub fn history_tokens(&self, items: &[&[u32]], codes: &Codes) -> Result<Tensor> {
        let ids = history_token_ids(&self.vocab, self.cfg.history_len, items, codes)?;
        let s = self.max_history_positions();
        Ok(Tensor::from_slice(&ids)
            .view([items.len() as i64, s])
            .to_device(self.device()))
    }
}
