"""Injectivity rules: every covered target gives the expected verdict, and the numbers confirm it."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch

from bwsk.passes.classify.coverage import core_targets
from bwsk.passes.classify.oracle import CheckResult, check
from bwsk.passes.classify.rules import GETITEM, TensorInfo, Verdict, classify, covered_targets


def t(*shape: int, dtype: torch.dtype = torch.float32) -> TensorInfo:
    return TensorInfo(tuple(shape), dtype)


def ids(*shape: int) -> TensorInfo:
    return TensorInfo(tuple(shape), torch.int64)


def mask(*shape: int) -> TensorInfo:
    return TensorInfo(tuple(shape), torch.bool)


@dataclass(frozen=True)
class Case:
    """One application of `target`, judged in operand `varying` (list item `item`)."""

    name: str
    target: str
    args: tuple
    kind: str
    varying: int = 0
    kwargs: dict = field(default_factory=dict)
    item: int | None = None
    outputs: tuple[int, ...] | None = None
    erased: int | None = None

    def verdict(self) -> Verdict:
        return classify(self.target, self.args, self.kwargs, self.varying, varying_item=self.item, outputs=self.outputs)

    def check(self, verdict: Verdict):
        return check(self.target, self.args, self.kwargs, self.varying, verdict, varying_item=self.item, outputs=self.outputs)


A = "aten."
COMPARISONS = ("eq", "ne", "lt", "le", "gt", "ge")
LN = (t(2, 3, 6), [6], t(6), t(6), 1e-5)  # input, normalized_shape, weight, bias, eps
BN = (t(2, 3, 2, 2), t(3), t(3), t(3), t(3))  # input, weight, bias, running_mean, running_var
CONV = ([2, 2], [0, 0], [1, 1], False, [0, 0], 1)  # stride, padding, dilation, transposed, output_padding, groups
CASES = [
    # same elements, rearranged or duplicated
    Case("view", A + "view.default", (t(2, 3, 4), [6, 4]), "S"),
    Case("reshape", A + "reshape.default", (t(2, 3, 4), [2, -1]), "S"),
    Case("unsafe_view", A + "_unsafe_view.default", (t(2, 3, 4), [24]), "S"),
    Case("flatten", A + "flatten.using_ints", (t(2, 3, 4), 1), "S"),
    Case("unsqueeze", A + "unsqueeze.default", (t(2, 3), 1), "S"),
    Case("squeeze_dim", A + "squeeze.dim", (t(2, 1, 3), 1), "S"),
    Case("squeeze_dims", A + "squeeze.dims", (t(2, 1, 3, 1), [1, 3]), "S"),
    Case("permute", A + "permute.default", (t(2, 3, 4), [2, 0, 1]), "S"),
    Case("transpose", A + "transpose.int", (t(2, 3, 4), 1, 2), "S"),
    Case("t", A + "t.default", (t(3, 4),), "S"),
    Case("clone", A + "clone.default", (t(2, 3),), "S"),
    Case("contiguous", A + "contiguous.default", (t(2, 3),), "S"),
    Case("alias", A + "alias.default", (t(2, 3),), "S"),
    Case("detach", A + "detach.default", (t(2, 3),), "S"),
    Case("lift_fresh_copy", A + "lift_fresh_copy.default", (t(2, 3),), "S"),
    Case("expand", A + "expand.default", (t(1, 3), [4, 3]), "S"),
    Case("expand_new_dims", A + "expand.default", (t(3, 1), [2, 3, 4]), "S"),
    Case("cat_first", A + "cat.default", ([t(2, 3), t(2, 2)], 1), "S", item=0),
    Case("cat_second", A + "cat.default", ([t(2, 3), t(2, 2)], 1), "S", item=1),
    Case("split", A + "split.Tensor", (t(2, 6), 4, 1), "S"),
    Case("split_with_sizes", A + "split_with_sizes.default", (t(2, 6), [2, 4], 1), "S"),
    Case("split_with_sizes_one_kept", A + "split_with_sizes.default", (t(2, 6), [2, 4], 1), "K", outputs=(1,)),
    Case("chunk", A + "chunk.default", (t(2, 6), 3, -1), "S"),
    Case("unbind", A + "unbind.int", (t(3, 4), 0), "S"),
    Case("unbind_two_kept", A + "unbind.int", (t(3, 4), 0), "K", outputs=(0, 2)),
    # selecting a subset
    Case("slice_full", A + "slice.Tensor", (t(2, 8), 1, 0, 9223372036854775807), "S"),
    Case("slice_partial", A + "slice.Tensor", (t(2, 3, 8), 2, 0, 2), "K", erased=6),
    Case("slice_strided", A + "slice.Tensor", (t(2, 8), 1, 0, 8, 2), "K", erased=4),
    Case("select", A + "select.int", (t(2, 3, 4), 1, 0), "K", erased=2),
    Case("select_size_one", A + "select.int", (t(2, 1, 4), 1, 0), "S"),
    Case("embedding_ids", A + "embedding.default", (t(10, 4), ids(2, 3)), "S", varying=1),
    Case("embedding_weight", A + "embedding.default", (t(10, 4), ids(2, 3)), "K"),
    Case("embedding_weight_covered", A + "embedding.default", (t(5, 4), ids(2, 3)), "S"),
    Case("gather_self", A + "gather.default", (t(1, 6), 1, ids(1, 3)), "K"),
    Case("gather_self_covered", A + "gather.default", (t(2, 6), 1, ids(2, 6)), "S"),
    Case("gather_index", A + "gather.default", (t(2, 6), 1, ids(2, 3)), "S", varying=2),
    Case("index_select_self", A + "index_select.default", (t(5, 3), 0, ids(2)), "K"),
    Case("index_select_self_covered", A + "index_select.default", (t(3, 2), 0, ids(4)), "S"),
    Case("index_select_index", A + "index_select.default", (t(5, 3), 0, ids(4)), "S", varying=2),
    Case("index_self", A + "index.Tensor", (t(2, 8), [ids(2, 1), ids(1, 3)]), "K"),
    Case("index_self_covered", A + "index.Tensor", (t(2, 8), [ids(2, 1), ids(1, 8)]), "S"),
    Case("index_self_int_covered", A + "index.Tensor", (ids(2, 8), [ids(2, 1, 1), ids(1, 8, 1)]), "S"),
    Case("index_ids", A + "index.Tensor", (t(2, 8), [ids(2, 1), ids(1, 8)]), "S", varying=1, item=1),
    Case("index_ids_int_table", A + "index.Tensor", (ids(2, 8), [ids(2, 1), ids(1, 8)]), "S", varying=1, item=0),
    # elementwise
    Case("tanh", A + "tanh.default", (t(3, 4),), "S"),
    Case("tanh_of_int64_promotes", A + "tanh.default", (ids(3, 4),), "K"),
    Case("sigmoid", A + "sigmoid.default", (t(3, 4),), "S"),
    Case("exp", A + "exp.default", (t(3, 4),), "S"),
    Case("neg", A + "neg.default", (t(3, 4),), "S"),
    Case("neg_int", A + "neg.default", (ids(3, 4),), "S"),
    Case("rsqrt", A + "rsqrt.default", (t(3, 4),), "S"),
    Case("log", A + "log.default", (t(3, 4),), "S"),
    Case("sqrt", A + "sqrt.default", (t(3, 4),), "S"),
    Case("relu", A + "relu.default", (t(3, 4),), "K"),
    Case("gelu", A + "gelu.default", (t(3, 4),), "K", erased=0),
    Case("gelu_tanh", A + "gelu.default", (t(3, 4),), "K", kwargs={"approximate": "tanh"}),
    Case("silu", A + "silu.default", (t(3, 4),), "K", erased=0),
    Case("sin", A + "sin.default", (t(3, 4),), "K"),
    Case("cos", A + "cos.default", (t(3, 4),), "K"),
    Case("abs", A + "abs.default", (t(3, 4),), "K"),
    Case("pow_cube", A + "pow.Tensor_Scalar", (t(3, 4), 3.0), "S"),
    Case("pow_square", A + "pow.Tensor_Scalar", (t(3, 4), 2), "K"),
    Case("pow_sqrt", A + "pow.Tensor_Scalar", (t(3, 4), 0.5), "S"),
    Case("pow_reciprocal", A + "pow.Tensor_Scalar", (t(3, 4), -1), "S"),
    Case("pow_zero", A + "pow.Tensor_Scalar", (t(3, 4), 0), "K"),
    Case("add_self", A + "add.Tensor", (t(2, 3), t(2, 3)), "S"),
    Case("add_other", A + "add.Tensor", (t(2, 3), t(2, 3)), "S", varying=1),
    Case("add_broadcast", A + "add.Tensor", (t(3), t(2, 3)), "S"),
    Case("add_scalar_int", A + "add.Tensor", (ids(2, 3), 1), "S"),
    Case("add_alpha_zero", A + "add.Tensor", (t(2, 3), t(2, 3)), "K", varying=1, kwargs={"alpha": 0}),
    Case("add_f64_scalar_into_f32", A + "add.Tensor", (t(dtype=torch.float64), t(2, 3)), "K"),
    Case("sub_self", A + "sub.Tensor", (t(2, 3), t(3)), "S"),
    Case("sub_other", A + "sub.Tensor", (t(2, 3), t(2, 3)), "S", varying=1),
    Case("mul_tensor", A + "mul.Tensor", (t(2, 3), t(1, 3)), "S"),
    Case("mul_scalar", A + "mul.Tensor", (t(2, 3), 0.5), "S"),
    Case("mul_zero", A + "mul.Tensor", (t(2, 3), 0), "K"),
    Case("mul_int_by_float", A + "mul.Tensor", (ids(2, 3), 0.5), "K"),
    *(Case(f"{op}_tensor", f"{A}{op}.Tensor", (ids(2, 3), ids(2, 3)), "K") for op in COMPARISONS),
    *(Case(f"{op}_scalar", f"{A}{op}.Scalar", (t(2, 3), 0), "K") for op in COMPARISONS),
    Case("bitwise_and", A + "bitwise_and.Tensor", (mask(2, 3), mask(2, 3)), "K"),
    Case("bitwise_and_int", A + "bitwise_and.Tensor", (ids(2, 3), ids(2, 3)), "K", varying=1),
    Case("and", A + "__and__.Tensor", (mask(2, 3), mask(2, 3)), "K"),
    Case("and_broadcast", A + "__and__.Tensor", (mask(), mask(2, 8)), "S"),
    Case("where_condition", A + "where.self", (mask(2, 3), t(2, 3), t(2, 3)), "S"),
    Case("where_self", A + "where.self", (mask(2, 3), t(2, 3), t(2, 3)), "K", varying=1),
    Case("where_other", A + "where.self", (mask(2, 3), t(2, 3), t(2, 3)), "K", varying=2),
    Case("where_self_broadcast", A + "where.self", (mask(2, 4), t(), t()), "S", varying=1),
    Case("where_scalar_other", A + "where.ScalarOther", (mask(2, 3), t(2, 3), 0.0), "K", varying=1),
    Case("where_scalar_other_condition", A + "where.ScalarOther", (mask(2, 3), t(2, 3), 0.0), "S"),
    Case("where_scalar_self", A + "where.ScalarSelf", (mask(2, 3), 0.0, t(2, 3)), "K", varying=2),
    Case("to_copy_f32_bf16", A + "_to_copy.default", (t(3, 4),), "K", kwargs={"dtype": torch.bfloat16}),
    Case("to_copy_f32_f64", A + "_to_copy.default", (t(3, 4),), "S", kwargs={"dtype": torch.float64}),
    Case("to_copy_i64_f32", A + "_to_copy.default", (ids(3, 4),), "K", kwargs={"dtype": torch.float32}),
    Case("to_copy_bool_f32", A + "_to_copy.default", (mask(3, 4),), "S", kwargs={"dtype": torch.float32}),
    Case("to_copy_f32_i64", A + "_to_copy.default", (t(3, 4),), "K", kwargs={"dtype": torch.int64}),
    Case("to_dtype_f32_f16", A + "to.dtype", (t(3, 4), torch.float16), "K"),
    Case("to_dtype_f16_f32", A + "to.dtype", (t(3, 4, dtype=torch.float16), torch.float32), "S"),
    Case("to_dtype_i32_i64", A + "to.dtype", (t(3, 4, dtype=torch.int32), torch.int64), "S"),
    Case("to_dtype_layout_f64", A + "to.dtype_layout", (t(3, 4),), "S", kwargs={"dtype": torch.float64}),
    Case("to_dtype_layout_bool", A + "to.dtype_layout", (t(3, 4),), "K", kwargs={"dtype": torch.bool}),
    Case("to_device_same_dtype", A + "to.device", (t(3, 4), torch.device("cpu"), torch.float32), "S"),
    Case("to_device_i64_f32", A + "to.device", (t(3, 4, dtype=torch.int64), torch.device("cpu"), torch.float32), "K"),
    Case("cumsum", A + "cumsum.default", (t(2, 3), 1), "S"),
    Case("cumsum_int", A + "cumsum.default", (ids(2, 5), -1), "S"),
    Case("cumsum_bool", A + "cumsum.default", (mask(2, 5), -1), "S"),
    Case("diff", A + "diff.default", (t(2, 8),), "K", erased=1),
    Case("diff_prepend", A + "diff.default", (t(2, 8), 1, -1, t(2, 1)), "S"),
    Case("diff_prepend_int", A + "diff.default", (ids(2, 8), 1, -1, ids(2, 1)), "S"),
    Case("diff_second_order", A + "diff.default", (t(2, 8), 2, -1, t(2, 1)), "K", erased=1),
    Case("diff_in_prepend", A + "diff.default", (t(2, 8), 1, -1, t(2, 1)), "S", varying=3),
    # reductions and normalisations
    Case("mean", A + "mean.dim", (t(2, 3, 4), [-1], True), "K", erased=3),
    Case("mean_size_one", A + "mean.dim", (t(2, 1, 4), [1]), "S"),
    Case("sum", A + "sum.dim_IntList", (t(2, 3, 4), [1, 2]), "K", erased=11),
    Case("amax", A + "amax.default", (t(2, 3, 4), [-1]), "K", erased=3),
    Case("softmax_core", A + "_softmax.default", (t(2, 5), -1, False), "K", erased=1),
    Case("softmax", A + "softmax.int", (t(2, 5), -1, torch.float32), "K", erased=1),
    Case("native_layer_norm", A + "native_layer_norm.default", LN, "K", erased=1),
    Case("native_layer_norm_eps0", A + "native_layer_norm.default", (*LN[:4], 0.0), "K", erased=2),
    Case("native_layer_norm_all_outputs", A + "native_layer_norm.default", LN, "S", outputs=(0, 1, 2)),
    Case("native_layer_norm_weight", A + "native_layer_norm.default", LN, "S", varying=2),
    Case("native_layer_norm_bias", A + "native_layer_norm.default", LN, "S", varying=3),
    Case("layer_norm", A + "layer_norm.default", LN, "K", erased=1),
    *(
        Case(f"batch_norm_eval_{name}", A + "_native_batch_norm_legit_no_training.default", (*BN, 0.1, 1e-5), "S", varying=i)
        for i, name in enumerate(("input", "weight", "bias", "running_mean", "running_var"))
    ),
    Case("batch_norm_eval", A + "batch_norm.default", (*BN, False, 0.1, 1e-5, False), "S"),
    Case("batch_norm_training", A + "batch_norm.default", (*BN, True, 0.1, 1e-5, False), "K", erased=1),
    Case("batch_norm_training_running_mean", A + "batch_norm.default", (*BN, True, 0.1, 1e-5, False), "K", varying=3),
    Case("dropout_training", A + "dropout.default", (t(3, 4), 0.1, True), "K"),
    Case("dropout_eval", A + "dropout.default", (t(3, 4), 0.1, False), "S"),
    Case("dropout_p0", A + "dropout.default", (t(3, 4), 0.0, True), "S"),
    Case("native_dropout_training", A + "native_dropout.default", (t(3, 4), 0.5, True), "K"),
    Case("native_dropout_eval", A + "native_dropout.default", (t(3, 4), 0.5, False), "S"),
    # linear maps
    Case("mm_square", A + "mm.default", (t(4, 5), t(5, 5)), "S"),
    Case("mm_up_projection", A + "mm.default", (t(4, 3), t(3, 6)), "S"),
    Case("mm_down_projection", A + "mm.default", (t(4, 6), t(6, 3)), "K", erased=3),
    Case("mm_right_few_rows", A + "mm.default", (t(2, 5), t(5, 5)), "K", varying=1, erased=3),
    Case("addmm_bias", A + "addmm.default", (t(6), t(4, 3), t(3, 6)), "S"),
    Case("addmm_up_projection", A + "addmm.default", (t(6), t(4, 3), t(3, 6)), "S", varying=1),
    Case("addmm_down_projection", A + "addmm.default", (t(3), t(4, 6), t(6, 3)), "K", varying=1, erased=3),
    Case("addmm_weight", A + "addmm.default", (t(3), t(4, 3), t(3, 3)), "S", varying=2),
    Case("addmm_beta_zero", A + "addmm.default", (t(3), t(4, 3), t(3, 3)), "K", kwargs={"beta": 0}),
    Case("bmm", A + "bmm.default", (t(2, 3, 4), t(2, 4, 4)), "S"),
    Case("bmm_down", A + "bmm.default", (t(2, 3, 4), t(2, 4, 2)), "K", erased=2),
    Case("matmul_scores_q", A + "matmul.default", (t(2, 2, 4, 4), t(2, 2, 4, 4)), "S"),
    Case("matmul_scores_k", A + "matmul.default", (t(2, 2, 4, 4), t(2, 2, 4, 4)), "S", varying=1),
    Case("matmul_broadcast_left", A + "matmul.default", (t(4, 3), t(2, 3, 2)), "S"),
    Case("matmul_vector", A + "matmul.default", (t(4), t(4, 2)), "K", erased=2),
    Case("linear_up", A + "linear.default", (t(2, 3, 4), t(6, 4), t(6)), "S"),
    Case("linear_down", A + "linear.default", (t(2, 3, 4), t(2, 4), t(2)), "K", erased=2),
    Case("linear_weight", A + "linear.default", (t(2, 3, 4), t(2, 4), t(2)), "S", varying=1),
    Case("linear_weight_few_rows", A + "linear.default", (t(1, 2, 4), t(2, 4), t(2)), "K", varying=1, erased=2),
    Case("linear_bias", A + "linear.default", (t(2, 3, 4), t(2, 4), t(2)), "S", varying=2),
    Case("convolution_patch_down", A + "convolution.default", (t(1, 3, 4, 4), t(8, 3, 2, 2), t(8), *CONV), "K", erased=16),
    Case("convolution_patch_up", A + "convolution.default", (t(1, 3, 4, 4), t(16, 3, 2, 2), t(16), *CONV), "S"),
    Case("convolution_skips_pixels", A + "convolution.default", (t(1, 2, 4, 4), t(8, 2, 1, 1), None, *CONV), "K"),
    Case("convolution_weight", A + "convolution.default", (t(1, 2, 4, 4), t(2, 2, 2, 2), None, *CONV), "K", varying=1),
    Case("convolution_bias", A + "convolution.default", (t(1, 3, 4, 4), t(8, 3, 2, 2), t(8), *CONV), "S", varying=2),
    Case("conv2d_same_channels", A + "conv2d.default", (t(1, 2, 4, 4), t(2, 2, 3, 3), None, [1, 1], [1, 1]), "S"),
    Case("conv2d_padding_same", A + "conv2d.padding", (t(1, 2, 4, 4), t(2, 2, 3, 3), None, [1, 1], "same"), "S"),
    Case("conv2d_weight", A + "conv2d.default", (t(2, 2, 4, 4), t(2, 2, 3, 3), None, [1, 1], [1, 1]), "S", varying=1),
    Case("max_pool2d", A + "max_pool2d.default", (t(1, 2, 4, 4), [2, 2], [2, 2]), "K"),
    Case("max_pool2d_1x1", A + "max_pool2d.default", (t(1, 2, 3, 3), [1, 1], [1, 1]), "S"),
    Case("max_pool2d_with_indices", A + "max_pool2d_with_indices.default", (t(1, 2, 4, 4), [2, 2], [2, 2]), "K"),
    Case("adaptive_avg_pool2d", A + "adaptive_avg_pool2d.default", (t(1, 2, 4, 4), [1, 1]), "K", erased=15),
    Case("adaptive_avg_pool2d_same", A + "adaptive_avg_pool2d.default", (t(1, 2, 3, 3), [3, 3]), "S"),
    # constants, metadata, tuple projections
    Case("arange", A + "arange.default", (8,), "S"),
    Case("arange_start", A + "arange.start", (2, 8), "S"),
    Case("arange_start_step", A + "arange.start_step", (0, 8, 2), "S"),
    Case("full", A + "full.default", ([2, 3], 1.0), "S"),
    Case("zeros", A + "zeros.default", ([2, 3],), "S"),
    Case("ones", A + "ones.default", ([2, 3],), "S"),
    Case("scalar_tensor", A + "scalar_tensor.default", (1.5,), "S"),
    Case("empty", A + "empty.memory_format", ([2, 3],), "S"),
    Case("new_ones", A + "new_ones.default", (t(2, 3), [4]), "K"),
    Case("sym_size", A + "sym_size.int", (t(2, 3), 1), "K"),
    Case("assert_tensor_metadata", A + "_assert_tensor_metadata.default", (t(2, 3),), "K", kwargs={"dtype": torch.float32}),
    Case("getitem_selected", GETITEM, ([t(2), t(3)], 0), "S", item=0),
    Case("getitem_not_selected", GETITEM, ([t(2), t(3)], 0), "K", item=1),
    Case("getitem_empty_sibling", GETITEM, ([t(2), t(0)], 0), "S", item=1),
    # Core ATen operators no OpInfo sample reaches (tests/passes/test_classify_coverage.py checks the rest)
    Case("eq_bools_is_xnor", A + "eq.Tensor", (mask(2, 3), mask(2, 3)), "S"),
    Case("gt_scalar", A + "gt.Scalar", (t(2, 3), 0.5), "K"),
    Case("ge_scalar_bool", A + "ge.Scalar", (mask(2, 3), True), "S"),
    Case("bitwise_xor_scalar", A + "bitwise_xor.Scalar", (ids(2, 3), 5), "S"),
    Case("bitwise_and_scalar", A + "bitwise_and.Scalar", (ids(2, 3), 6), "K"),
    Case("bitwise_or_scalar_zero", A + "bitwise_or.Scalar", (ids(2, 3), 0), "S"),
    Case("div_scalar_mode", A + "div.Scalar_mode", (t(2, 3), 2.0), "K", kwargs={"rounding_mode": "floor"}),
    Case("fmod_scalar", A + "fmod.Scalar", (t(2, 3), 0.7), "K"),
    Case("pow_scalar_base", A + "pow.Scalar", (2.0, t(2, 3)), "S", varying=1),
    Case("clamp", A + "clamp.default", (t(2, 3), -0.5, 0.5), "K"),
    Case("hardtanh", A + "hardtanh.default", (t(2, 3),), "K"),
    Case("copy_src", A + "copy.default", (t(2, 3), t(3)), "S", varying=1),
    Case("copy_self", A + "copy.default", (t(2, 3), t(3)), "K"),
    Case("var_dim", A + "var.dim", (t(2, 5), [1]), "K"),
    Case("any_dims", A + "any.dims", (t(2, 5), [1]), "K"),
    Case("reflection_pad2d", A + "reflection_pad2d.default", (t(1, 2, 3, 3), [1, 1, 1, 1]), "S"),
    Case("reflection_pad3d", A + "reflection_pad3d.default", (t(1, 1, 3, 3, 3), [1, 1, 1, 1, 1, 1]), "S"),
    Case("replication_pad3d", A + "replication_pad3d.default", (t(1, 1, 2, 2, 2), [1, 0, 1, 0, 1, 0]), "S"),
    Case("constant_pad_crop", A + "constant_pad_nd.default", (t(2, 5), [-1, 2]), "K"),
    Case("slice_scatter_src", A + "slice_scatter.default", (t(4, 3), t(2, 3), 0, 0, 2), "S", varying=1),
    Case("slice_scatter_self", A + "slice_scatter.default", (t(4, 3), t(2, 3), 0, 0, 2), "K"),
    Case("scatter_value_self", A + "scatter.value", (t(3, 4), 1, ids(3, 2), 1.0), "K"),
    Case("upsample_bilinear", A + "upsample_bilinear2d.vec", (t(1, 2, 3, 3), [6, 6], False, None), "S"),
    Case("upsample_bilinear_down", A + "upsample_bilinear2d.vec", (t(1, 2, 6, 6), [3, 3], False, None), "K"),
    Case("upsample_nearest", A + "upsample_nearest2d.vec", (t(1, 2, 3, 3), [6, 6], None), "S"),
    Case("avg_pool2d", A + "avg_pool2d.default", (t(1, 2, 4, 4), [2, 2], [2, 2]), "K", erased=12),
    Case(
        "avg_pool2d_backward",
        A + "avg_pool2d_backward.default",
        (t(1, 2, 2, 2), t(1, 2, 4, 4), [2, 2], [2, 2], [0, 0], False, True, None),
        "S",
    ),
    Case("adaptive_avg_pool2d_backward", A + "_adaptive_avg_pool2d_backward.default", (t(1, 2, 2, 2), t(1, 2, 4, 4)), "S"),
    Case("col2im_tiles", A + "col2im.default", (t(1, 8, 4), [4, 4], [2, 2], [1, 1], [0, 0], [2, 2]), "S"),
    Case("col2im_overlaps", A + "col2im.default", (t(1, 8, 9), [4, 4], [2, 2], [1, 1], [0, 0], [1, 1]), "K"),
    Case("native_dropout_train", A + "native_dropout.default", (t(3, 4), 0.5, True), "K"),
    Case("batch_norm_legit_no_stats", A + "_native_batch_norm_legit.no_stats", (t(2, 3, 2, 2), t(3), t(3), True, 0.1, 1e-5), "K"),
    Case("batch_norm_legit_no_training", A + "_native_batch_norm_legit_no_training.default", (*BN, 0.1, 1e-5), "S"),
    Case("sym_numel", A + "sym_numel.default", (t(2, 3),), "K"),
    Case("sym_stride", A + "sym_stride.int", (t(2, 3), 0), "K"),
    Case("sym_storage_offset", A + "sym_storage_offset.default", (t(2, 3),), "K"),
    Case("sym_is_contiguous", A + "sym_is_contiguous.default", (t(2, 3),), "K"),
    Case("randperm", A + "randperm.default", (5,), "S"),
    Case("rand", A + "rand.default", ([2, 3],), "S"),
    Case("randn", A + "randn.default", ([2, 3],), "S"),
    Case("embedding_dense_backward_repeats", A + "embedding_dense_backward.default", (t(6, 4), ids(6), 3, -1, False), "K"),
    Case("atan2_out_self", A + "atan2.out", (t(2, 3), t(2, 3)), "S", kwargs={"out": t(2, 3)}),
    Case("avg_pool1d", A + "avg_pool1d.default", (t(1, 2, 6), [2], [2]), "K", erased=3),
    Case("adaptive_avg_pool1d_same", A + "adaptive_avg_pool1d.default", (t(1, 2, 5), [5]), "S"),
    Case("empty_strided", A + "empty_strided.default", ([2, 3], [3, 1]), "S"),
    Case("adaptive_avg_pool2d_up", A + "_adaptive_avg_pool2d.default", (t(1, 2, 2, 2), [4, 4]), "S"),
    # edges
    Case("mul_int64_by_float32_rounds", A + "mul.Tensor", (ids(2, 3), t(2, 3)), "K"),
    Case("add_broadcast_into_empty", A + "add.Tensor", (t(3), t(0, 3)), "K"),
    Case("repeat_zero_times", A + "repeat.default", (t(2, 3), [0, 1]), "K"),
    Case("repeat", A + "repeat.default", (t(2, 3), [2, 1]), "S"),
    Case("as_strided_all", A + "as_strided.default", (t(2, 3), [3, 2], [1, 3]), "S"),
    Case("as_strided_subset", A + "as_strided.default", (t(2, 3), [2, 2], [3, 1]), "K"),
    Case(
        "conv_padding_only_outputs",
        A + "convolution.default",
        (t(1, 4, 2, 2), t(1, 4, 1, 1), None, [1, 1], [2, 2], [1, 1], False, [0, 0], 1),
        "K",
    ),
    Case(
        "conv_dilation_skips",
        A + "convolution.default",
        (t(1, 1, 5, 5), t(4, 1, 2, 2), None, [3, 3], [0, 0], [2, 2], False, [0, 0], 1),
        "K",
    ),
    Case(
        "conv_padding_fine", A + "convolution.default", (t(1, 1, 3, 3), t(2, 1, 3, 3), None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1), "S"
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_rule_verdict_is_confirmed_numerically(case: Case) -> None:
    verdict = case.verdict()
    assert verdict.kind == case.kind, verdict
    assert verdict.reason and "\n" not in verdict.reason
    if case.erased is not None:
        assert verdict.erased == case.erased, verdict
    result = case.check(verdict)
    assert result.ok, f"{verdict} -> {result.evidence}"


# Every operator in the Core ATen (run_decompositions) and training-level (torch.export) graphs of tiny
# Pythia, GPT-2, OPT, BERT, ViT, Llama (GQA, tied embeddings) and a plain ResNet, collected by export.
MODEL_TARGETS = {GETITEM} | {
    A + name
    for name in (
        "__and__.Tensor",
        "_assert_tensor_metadata.default",
        "_native_batch_norm_legit_no_training.default",
        "_softmax.default",
        "_to_copy.default",
        "adaptive_avg_pool2d.default",
        "add.Tensor",
        "addmm.default",
        "alias.default",
        "arange.default",
        "arange.start_step",
        "batch_norm.default",
        "bitwise_and.Tensor",
        "bmm.default",
        "cat.default",
        "chunk.default",
        "clone.default",
        "contiguous.default",
        "conv2d.default",
        "convolution.default",
        "cos.default",
        "cumsum.default",
        "diff.default",
        "dropout.default",
        "embedding.default",
        "eq.Tensor",
        "expand.default",
        "flatten.using_ints",
        "full.default",
        "gather.default",
        "ge.Scalar",
        "gelu.default",
        "index.Tensor",
        "layer_norm.default",
        "le.Tensor",
        "linear.default",
        "matmul.default",
        "max_pool2d.default",
        "max_pool2d_with_indices.default",
        "mean.dim",
        "mm.default",
        "mul.Tensor",
        "native_layer_norm.default",
        "ne.Scalar",
        "neg.default",
        "new_ones.default",
        "ones.default",
        "permute.default",
        "pow.Tensor_Scalar",
        "relu.default",
        "reshape.default",
        "rsqrt.default",
        "scalar_tensor.default",
        "select.int",
        "sigmoid.default",
        "silu.default",
        "sin.default",
        "slice.Tensor",
        "softmax.int",
        "split.Tensor",
        "split_with_sizes.default",
        "sub.Tensor",
        "tanh.default",
        "to.device",
        "to.dtype",
        "to.dtype_layout",
        "transpose.int",
        "unsqueeze.default",
        "view.default",
        "where.ScalarOther",
        "where.self",
        "zeros.default",
    )
}


def test_model_operators_are_covered() -> None:
    assert MODEL_TARGETS <= covered_targets()


def test_every_core_operator_has_a_rule() -> None:
    missing = [t for t in core_targets() if t not in covered_targets()]
    assert not missing
    assert len(core_targets()) > 150


# Corrections of the earlier research code, which got these wrong.


def test_layer_norm_is_K() -> None:
    args = (t(2, 3, 6), [6], t(6), t(6), 1e-5)
    verdict = classify(A + "native_layer_norm.default", args, {}, 0)
    assert verdict.kind == "K" and "mean" in verdict.reason
    assert check(A + "native_layer_norm.default", args, {}, 0, verdict).ok


@pytest.mark.parametrize("op", ["tanh", "sigmoid"])
def test_tanh_and_sigmoid_are_S(op: str) -> None:
    verdict = classify(f"{A}{op}.default", (t(3, 4),), {}, 0)
    assert verdict == Verdict("S", f"strictly monotone ({op})")
    assert check(f"{A}{op}.default", (t(3, 4),), {}, 0, verdict).ok


def test_slicing_that_drops_elements_is_K() -> None:
    verdict = classify(A + "slice.Tensor", (t(2, 4, 8, 8), 3, 0, 2), {}, 0)
    assert verdict.kind == "K" and verdict.reason.startswith("drops 6 of 8 elements along dim 3")
    assert check(A + "slice.Tensor", (t(2, 4, 8, 8), 3, 0, 2), {}, 0, verdict).ok


def test_down_projection_is_K() -> None:
    args = (t(4), t(8, 16), t(16, 4))
    verdict = classify(A + "addmm.default", args, {}, 1)
    assert verdict == Verdict("K", "rank <= 4 < 16: erases 12 dimensions per row", None, 12)
    assert check(A + "addmm.default", args, {}, 1, verdict).ok


def test_square_linear_map_is_conditional_S() -> None:
    verdict = classify(A + "mm.default", (t(8, 16), t(16, 16)), {}, 0)
    assert (verdict.kind, verdict.condition) == ("S", "the right operand is invertible (16x16)")


# Unknowns and the checker's power to refute a wrong verdict.


# The oracle cannot draw valid operands for these (offsets must start at 0 and increase): verdicts only.
UNDRAWABLE = [
    Case("embedding_bag_weight_few_bags", A + "_embedding_bag.default", (t(8, 3), ids(4), ids(2)), "K"),
    Case("embedding_bag_ids_per_bag", A + "_embedding_bag.default", (t(8, 3), ids(4), ids(2)), "K", varying=1),
    Case("embedding_bag_one_id_per_bag", A + "_embedding_bag.default", (t(8, 3), ids(4), ids(4)), "S", varying=1),
    Case("embedding_bag_max", A + "_embedding_bag.default", (t(4, 3), ids(8), ids(8), False, 2), "K"),
]


@pytest.mark.parametrize("case", UNDRAWABLE, ids=lambda c: c.name)
def test_verdict_where_the_oracle_cannot_draw(case: Case) -> None:
    assert case.verdict().kind == case.kind


UNKNOWNS = [
    ("aten.foo.default", (t(3),), 0),
    (A + "index.Tensor", (t(2, 3), [mask(2, 3)]), 0),
    (A + "pow.Tensor_Scalar", (ids(3), 3), 0),
    (A + "convolution.default", (t(1, 2, 4, 4), t(2, 2, 2, 2), None, [1, 1], [0, 0], [1, 1], True, [0, 0], 1), 0),
    (A + "add.Tensor", (t(2, 3), 1.0), 1),
    (
        A + "convolution_backward.default",
        (t(1, 2, 2, 2), t(1, 1, 3, 3), t(2, 1, 2, 2), [2], [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [True, True, True]),
        0,
    ),
    (A + "native_layer_norm_backward.default", (t(2, 4), t(2, 4), [4], t(2, 1), t(2, 1), t(4), t(4), [True, True, True]), 0),
    (A + "native_group_norm_backward.default", (t(2, 4, 3), t(2, 4, 3), t(2, 2), t(2, 2), t(4), 2, 4, 3, 2, [True, True, True]), 0),
    (A + "resize_.default", (t(2, 3), [6]), 0),
]


@pytest.mark.parametrize(
    "target, args, varying",
    UNKNOWNS,
    ids=[
        "no_rule",
        "bool_mask_index",
        "int_pow",
        "transposed_conv",
        "scalar_operand",
        "convolution_backward",
        "layer_norm_backward",
        "group_norm_backward",
        "resize_",
    ],
)
def test_unknown_verdicts_are_not_confirmed(target: str, args: tuple, varying: int) -> None:
    verdict = classify(target, args, {}, varying)
    assert verdict.kind == "unknown"
    assert check(target, args, {}, varying, verdict) == CheckResult(False, "no rule")


def test_no_rule_reason_names_the_target() -> None:
    assert classify("aten.foo.default", (t(3),), {}, 0) == Verdict("unknown", "no rule for aten.foo.default")


@pytest.mark.parametrize(
    "target, args, wrong",
    [
        (A + "gelu.default", (t(3, 4),), "S"),
        (A + "relu.default", (t(3, 4),), "S"),
        (A + "slice.Tensor", (t(2, 8), 1, 0, 4), "S"),
        (A + "_softmax.default", (t(2, 5), -1, False), "S"),
        (A + "tanh.default", (t(3, 4),), "K"),
        (A + "mm.default", (t(4, 5), t(5, 5)), "K"),
        (A + "cumsum.default", (ids(2, 5), -1), "K"),
    ],
    ids=["gelu_S", "relu_S", "slice_S", "softmax_S", "tanh_K", "mm_K", "cumsum_int_K"],
)
def test_check_refutes_a_wrong_verdict(target: str, args: tuple, wrong: str) -> None:
    assert not check(target, args, {}, 0, Verdict(wrong, "deliberately wrong")).ok


def test_cast_verdict_refuted_when_it_rounds() -> None:
    kwargs = {"dtype": torch.bfloat16}
    assert not check(A + "_to_copy.default", (t(3, 4),), kwargs, 0, Verdict("S", "deliberately wrong")).ok


class _Halves(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = torch.split(x, 2, dim=-1)
        return first * 2 + second


@pytest.mark.slow
def test_getitem_rule_fires_on_a_lowered_program() -> None:
    import bwsk

    program = bwsk.lower_module(_Halves(), (torch.randn(3, 4),), level="core")
    analysis = bwsk.analyze(program, passes=["classify"])
    getitems = [c for c in analysis.flow.calls if c.target == GETITEM]
    assert getitems
    for call in getitems:
        verdict = analysis.classes[call.index]
        assert (verdict.kind, verdict.reason) == ("S", f"selects output {call.args[1]}: identity on it")
