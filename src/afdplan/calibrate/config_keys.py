"""What every Hugging Face ``config.json`` key means to a decode step's cost.

The model reader never guesses: each key is one of

* read — it sets a shape the roofline uses (``calibrate.specs.model_from_config``);
* no cost — it does not change a decode step's compute or memory: token ids, generation
  defaults, training-only settings, norms' epsilons, position-encoding parameters, the
  router's scoring details (which experts, not how many), small biases, and modules that
  plain decoding does not load (multi-token-prediction heads, vision and audio towers,
  which serve prefill of images and sound);
* unsupported — it names an architecture whose cost afdplan does not model (hybrid
  layers other than Gated DeltaNet — Mamba, lightning or KDA linear attention —,
  sparse attention beyond DeepSeek-V3.2's, sliding-window or chunked
  attention, heterogeneous blocks, compressed attention, latent MoE); a config that
  turns one on is refused in one line naming the key and the architecture;

and a key in none of these lists is refused too. A config using several unsupported
keys is refused on the first in ``UNSUPPORTED``'s order, which names the defining key of
each architecture before its details (one line: afdplan cannot tell whether
it changes the cost). The lists cover every key of the configs aiconfigurator-core 0.12
caches; ``tests/test_model_configs.py`` loads each of those configs and records which
load and which are refused, and why.
"""

from __future__ import annotations

READ = frozenset(
    {
        "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
        "head_dim", "intermediate_size", "vocab_size", "tie_word_embeddings",
        # experts: counts, widths, shared experts, which layers are MoE
        "n_routed_experts", "num_experts", "num_local_experts", "moe_num_experts",
        "num_experts_per_tok", "num_experts_per_token", "experts_per_token", "top_k_experts",
        "moe_top_k", "moe_intermediate_size", "expert_intermediate_size",
        "n_shared_experts", "num_shared_experts", "shared_expert_intermediate_size",
        "moe_shared_expert_intermediate_size", "share_expert_dim", "first_k_dense_replace",
        "moe_layer_freq", "decoder_sparse_step", "mlp_only_layers", "moe_layers_enum",
        "mlp_layer_types",
        # MLA (DeepSeek) and Step-3's attention (shared KV groups, low-rank query)
        "kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim", "q_lora_rank",
        "qk_head_dim",  # MLA's nope + rope width, restated (GLM-5): checked, not new
        "num_attention_groups", "share_q_dim",
        # DeepSeek sparse attention (V3.2): the indexer's shape and the tokens MLA reads
        "index_topk", "index_n_heads", "index_head_dim",
        # per-layer attention types: full attention, or Qwen3-Next's Gated DeltaNet layers
        # (MiniMax's attn_type_list: 1 full, 0 linear, as vLLM's config counts them)
        "layer_types", "attn_type_list", "sliding_window", "use_sliding_window",
        "max_window_layers",
        # Gated DeltaNet (Qwen3-Next, Qwen3.5): its heads, conv kernel and state dtype, the
        # layout of its layers, and the gate on the full-attention layers' output
        "full_attention_interval", "linear_conv_kernel_dim", "linear_key_head_dim",
        "linear_num_key_heads", "linear_num_value_heads", "linear_value_head_dim",
        "mamba_ssm_dtype", "attn_output_gate",
        # element types
        "torch_dtype", "dtype", "weight_dtype", "kv_dtype", "quantization_config",
        # the model class: which runtimes serve it (deploy's launch files)
        "architectures",
        # afdplan's own
        "source", "text_config",
    }
)  # fmt: skip

NO_COST = frozenset(
    {
        # identity and bookkeeping
        "_name_or_path", "auto_map", "model_type", "transformers_version",
        "tokenizer_class", "id2label", "label2id", "finetuning_task", "problem_type",
        "task_specific_params", "prefix", "torchscript", "return_dict", "use_bfloat16",
        "pruned_heads", "tf_legacy_loss", "language_model_only", "ep_size",
        # token ids
        "bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id",
        "decoder_start_token_id", "forced_bos_token_id", "forced_eos_token_id",
        "image_token_id", "image_token_index", "video_token_id", "video_token_index",
        "audio_token_id", "boa_token_id", "boi_token_id", "eoa_token_id", "eoa_token_index",
        "eoi_token_id", "vision_start_token_id", "vision_end_token_id",
        "media_placeholder_token_id", "image_placeholder", "video_placeholder",
        # generation defaults
        "do_sample", "temperature", "top_k", "top_p", "typical_p", "num_beams",
        "num_beam_groups", "diversity_penalty", "max_length", "min_length",
        "repetition_penalty", "length_penalty", "no_repeat_ngram_size",
        "encoder_no_repeat_ngram_size", "bad_words_ids", "early_stopping",
        "num_return_sequences", "output_scores", "return_dict_in_generate",
        "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens",
        "begin_suppress_tokens", "use_cache", "output_attentions", "output_hidden_states",
        "chunk_size_feed_forward", "num_logits_to_keep",
        # training only
        "initializer_range", "attention_dropout", "hidden_dropout", "aux_loss_alpha",
        "router_aux_loss_coef", "router_jitter_noise", "output_router_logits", "seq_aux",
        "ignore_index", "num_reward_heads",
        # encoder-decoder switches (off in decoder-only models)
        "is_decoder", "is_encoder_decoder", "add_cross_attention",
        "cross_attention_hidden_size", "tie_encoder_decoder",
        # numerics of the same shapes
        "rms_norm_eps", "layer_norm_epsilon", "layernorm_epsilon", "norm_eps", "hidden_act",
        "hidden_activation", "mlp_hidden_act", "projector_hidden_act", "swiglu_alpha",
        "swiglu_limit", "final_logit_softcapping", "use_qk_norm", "qk_norm_type",
        "use_gemma_norm", "rescale_prenorm_residual", "residual_in_fp32", "pretraining_tp",
        # positions
        "rope_theta", "rope_scaling", "rope_parameters", "rope_interleave",
        # the sparse indexer's rotary layout (GPT-J pairs or NeoX halves): vLLM's DSA
        # indexer only picks is_neox_style from it (models/deepseek_v2.py, the indexer's
        # get_rope), and serves GLM-5 as DeepseekV2ForCausalLM with it set
        "indexer_rope_interleave",
        "partial_rotary_factor", "rotary_dim", "max_position_embeddings",
        "initial_context_length", "use_mrope", "max_seq_len", "max_position_embedding",
        # the router's scoring (which experts, not how many or how wide)
        "n_group", "topk_group", "topk_method", "scoring_func", "norm_topk_prob",
        "routed_scaling_factor", "num_expert_group", "use_grouped_topk", "moe_renormalize",
        "moe_router_activation_func", "moe_router_dtype", "moe_router_scaling_factor",
        "use_routing_bias", "use_moe_router_bias", "norm_expert_weight",
        # small biases (a vector per projection, not a matrix)
        "attention_bias", "mlp_bias", "qkv_bias", "use_bias",
        # multi-token-prediction heads: not loaded by plain decoding
        "num_nextn_predict_layers", "num_mtp_modules", "mtp_num_hidden_layers",
        "mtp_transformer_layers", "mtp_use_dedicated_embeddings", "use_mtp",
        "index_share_for_mtp_iteration",
        # vision and audio towers (prefill of images and sound) and their projector
        "vision_config", "audio_config", "image_grid_pinpoints", "image_seq_length",
        "vision_feature_layer", "vision_feature_select_strategy", "projector_hidden_size",
        "multimodal_projector_bias", "vision_soft_tokens_per_image", "process_image_mode",
        "img_token_compression_config", "use_unified_vision_chunk",
        "understand_projector_stride", "projector_bias",
    }
)  # fmt: skip

# key → the architecture it names (refused when the config turns it on)
HYBRID = "hybrid layers of linear attention or state-space models (a constant-size state)"
SPARSE = (
    "a sparse-attention variant beyond DeepSeek-V3.2's one top-k per layer (per-layer top-k "
    "patterns or frequencies, mixed indexers)"
)
WINDOWED = "sliding-window or chunked attention layers (a bounded KV per layer)"
UNSUPPORTED: dict[str, str] = {
    **dict.fromkeys(
        (
            "layers_block_type", "hybrid_override_pattern", "hybrid_layer_pattern",
            "linear_attn_config", "mamba_head_dim",
            "mamba_hidden_act", "mamba_num_heads", "mamba_proj_bias", "mamba_ssm_cache_dtype",
            "ssm_state_size", "conv_kernel", "use_conv_bias", "expand",
            "n_groups", "time_step_floor", "time_step_limit", "time_step_max", "time_step_min",
            "time_step_rank", "use_mamba_kernels", "mtp_hybrid_override_pattern",
            "mtp_layers_block_type", "chunk_size", "attention_output_gate",
            "output_gate_type",
        ),
        HYBRID,
    ),
    **dict.fromkeys(
        (
            "index_topk_freq", "index_topk_pattern", "indexer_types", "index_skip_topk_offset",
            "sparse_attention_config",
        ),
        SPARSE,
    ),
    **dict.fromkeys(
        (
            "sliding_window_size", "swa_head_dim", "swa_num_attention_heads",
            "swa_num_key_value_heads", "swa_rope_theta", "swa_v_head_dim",
            "num_global_key_value_heads", "global_head_dim", "attention_chunk_size",
            "add_swa_attention_sink_bias", "add_full_attention_sink_bias",
            "attention_other_setting",
        ),
        WINDOWED,
    ),
    **dict.fromkeys(("block_configs",), "per-layer heterogeneous blocks (NAS-pruned layers)"),
    **dict.fromkeys(
        ("num_kv_shared_layers", "hidden_size_per_layer_input", "vocab_size_per_layer_input"),
        "per-layer embeddings and KV shared across layers",
    ),
    **dict.fromkeys(
        (
            "compress_ratios", "compress_rope_theta", "o_lora_rank", "o_groups", "hc_mult",
            "hc_eps", "hc_sinkhorn_iters", "num_hash_layers", "attn_res_block_size",
            "mla_use_output_gate", "mla_use_nope", "attention_k_eq_v",
            "attention_value_scale",
        ),
        "compressed or gated attention variants (output low-rank, hyper-connections)",
    ),
    **dict.fromkeys(
        (
            "moe_latent_size", "latent_moe_use_norm", "routed_expert_hidden_size",
            "use_double_wide_mlp", "intermediate_size_mlp", "dense_intermediate_size",
            "shared_intermediate_size", "moe_shared_expert_overlap", "enable_moe_block",
            "expert_dtype", "interleave_moe_layer_step", "activation_situ_beta",
            "activation_situ_linear_beta", "attention_head_dim", "use_bidirectional_attention",
            "use_moe", "moe_every_n_layer",
        ),
        "MoE and FFN variants whose widths or placement afdplan does not read",
    ),
}  # fmt: skip
