//! LADQ: layer-adaptive mixed precision. Each linear layer's sensitivity is estimated from the traces of its
//! K-FAC factors and the layer is assigned fp32, bf16 or fp8 accordingly. Spec section 6.
