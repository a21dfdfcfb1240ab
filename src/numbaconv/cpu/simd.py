"""Register tiles of explicit SIMD vectors, as Numba intrinsics.

LLVM vectorizes a Numba loop over filters only when its trip count is 64
float32 (see :mod:`numbaconv.cpu.target`): a tile of 64 filters per pixel is
8 AVX2 registers, so with 16 registers one pixel fits and every weight
vector loaded serves one multiply-add.  A tile of several pixels × 2
vectors of filters (what an AVX2 matrix-multiply kernel holds: 12 sums, 2
weight vectors, 1 broadcast input) cannot be written as such a loop, and
scalar code over named sums stays scalar (LLVM's SLP vectorizer leaves
loop-carried sums alone; measured).  These intrinsics write that tile in
LLVM IR directly:

* a tile is a tuple of ``P`` rows (pixels) of ``V`` :class:`Vector` values
  (``L`` lanes: filters), whose sizes are part of its type, so each tile
  shape compiles to straight-line code on values LLVM keeps in registers;
* :func:`tile_load` starts one from bias vectors, :func:`tile_fma` adds one
  input channel's products (``V`` weight vectors loaded once, each of the
  ``P`` input values broadcast once), :func:`tile_relu` rectifies it,
  :func:`tile_store` writes its pixels' filters where they are contiguous
  (channels_last), :func:`tile_scatter` value by value elsewhere
  (channels_first, a partial filter block);
* grouped layers whose groups are narrower than a vector keep each group in
  its own lanes: :func:`tile_fma_groups` (forward) and
  :func:`tile_fma_spread` (kernel gradient) broadcast a group's input
  channel across the group's lanes by an in-register shuffle;
* :func:`tile_fma_window` adds one output pixel's products with every tap of
  a depthwise window, taps outside the image masked off (a depthwise
  kernel gradient); :func:`tile_fma_outer` every pixel's vector times every
  channel's (the input gradient of a layer with few input channels);
* :func:`prefetch` asks for a cache line ahead of a strided read, :func:`prefetch_l2`
  for one wanted much later.

Arrays are addressed flat through their data pointer: they must be
C-contiguous, and the caller keeps every index inside them (no bounds or
wraparound checks, as with Numba's own indexing of unsigned indices).
"""

from __future__ import annotations

from llvmlite import binding, ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

__all__ = ["Vector", "prefetch", "prefetch_l2", "stream_fence", "tile_accumulate", "tile_fma",
           "tile_fma_groups", "tile_fma_lanes", "tile_fma_outer", "tile_fma_pairs",
           "tile_fma_spread", "tile_fma_window", "tile_load", "tile_relu", "tile_scatter",
           "tile_store", "tile_stream"]

_X86 = binding.get_process_triple().startswith(("x86_64", "i386", "i686"))


class Vector(types.Type):
    """``lanes`` values of ``dtype`` in one SIMD value (LLVM ``<lanes x dtype>``)."""

    def __init__(self, dtype, lanes):
        self.dtype, self.lanes = dtype, lanes
        super().__init__(name=f"Vector({dtype}, {lanes})")


@register_model(Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, fe_type.lanes))


def _contiguous_float_array(ty):
    return (isinstance(ty, types.Array) and ty.layout == "C"
            and isinstance(ty.dtype, types.Float))


def _vector_pointer(context, builder, array_type, array, index, vector_type):
    """Pointer to the vector starting at flat element ``index`` of ``array``."""
    data = context.make_array(array_type)(context, builder, array).data
    return builder.bitcast(builder.gep(data, [index]), vector_type.as_pointer())


def _plus(builder, index, constant):
    return builder.add(index, ir.Constant(index.type, constant)) if constant else index


def _tile_shape(tile):
    """``(P, V, Vector)`` of a tile type, or None for any other type."""
    if (isinstance(tile, types.UniTuple) and isinstance(tile.dtype, types.UniTuple)
            and isinstance(tile.dtype.dtype, Vector)):
        return tile.count, tile.dtype.count, tile.dtype.dtype
    return None


def _fma_shape(tile, x, x_index, x_step, w, w_index):
    """The tile's ``(P, V, Vector)`` if the operands of a multiply-add step fit it, else None."""
    shape = _tile_shape(tile)
    if (shape is None or not (_contiguous_float_array(x) and _contiguous_float_array(w))
            or x.dtype != shape[2].dtype or w.dtype != shape[2].dtype
            or not all(isinstance(i, types.Integer) for i in (x_index, x_step, w_index))):
        return None
    return shape


def _loader(context, builder, vector):
    """``load(array_type, array, index)``: the ``vector`` at flat element ``index`` of an array."""
    vector_type = context.get_value_type(vector)
    align = vector.dtype.bitwidth // 8

    def load(array_type, array, index):
        return builder.load(_vector_pointer(context, builder, array_type, array, index,
                                            vector_type), align=align)

    return load


def _fmuladd(builder, vector_type, vector):
    """LLVM's fused (where the CPU can) multiply-add on ``vector`` values."""
    return cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vector_type, [vector_type] * 3),
        f"llvm.fmuladd.v{vector.lanes}f{vector.dtype.bitwidth}")


@intrinsic
def tile_load(typingctx, b, index, step, pixels, vectors, lanes):
    """A tile of ``pixels`` rows, row ``p`` the ``vectors × lanes`` values ``b[index + p·step:]``.

    ``step`` 0 repeats one row (a bias).  ``pixels``, ``vectors`` and
    ``lanes`` must be compile-time constants.
    """
    sizes = (pixels, vectors, lanes)
    if not (_contiguous_float_array(b) and isinstance(index, types.Integer)
            and isinstance(step, types.Integer)
            and all(isinstance(size, types.IntegerLiteral) for size in sizes)):
        return None
    P, V, L = (size.literal_value for size in sizes)
    vector = Vector(b.dtype, L)
    row_type = types.UniTuple(vector, V)
    tile_type = types.UniTuple(row_type, P)

    def codegen(context, builder, signature, args):
        array, start, row_step = args[0], args[1], args[2]
        row_step = context.cast(builder, row_step, signature.args[2], signature.args[1])
        vector_type = context.get_value_type(vector)
        rows = []
        for p in range(P):
            loads = [builder.load(_vector_pointer(context, builder, signature.args[0], array,
                                                  _plus(builder, start, v * L), vector_type),
                                  align=b.dtype.bitwidth // 8)
                     for v in range(V)]
            rows.append(context.make_tuple(builder, row_type, loads))
            if p + 1 < P:
                start = builder.add(start, row_step)
        return context.make_tuple(builder, tile_type, rows)

    return tile_type(b, index, step, pixels, vectors, lanes), codegen


@intrinsic
def tile_fma(typingctx, tile, x, x_index, x_step, w, w_index):
    """``tile`` plus pixel ``p``'s input ``x[x_index + p·x_step]`` times weights ``w[w_index:]``.

    The weights are the tile's ``V × L`` filters, contiguous.  Multiply and
    add are fused where the CPU can (``llvm.fmuladd``).
    """
    shape = _fma_shape(tile, x, x_index, x_step, w, w_index)
    if shape is None:
        return None
    P, V, vector = shape
    L = vector.lanes

    def codegen(context, builder, signature, args):
        sums, x_array, x_at, step, w_array, w_at = args
        vector_type = context.get_value_type(vector)
        align = vector.dtype.bitwidth // 8
        fmuladd = _fmuladd(builder, vector_type, vector)
        weights = [builder.load(_vector_pointer(context, builder, signature.args[4], w_array,
                                                _plus(builder, w_at, v * L), vector_type),
                                align=align)
                   for v in range(V)]
        x_data = context.make_array(signature.args[1])(context, builder, x_array).data
        step = context.cast(builder, step, signature.args[3], signature.args[2])
        lane_zero = ir.Constant(ir.VectorType(ir.IntType(32), L), [0] * L)
        for p in range(P):
            value = builder.load(builder.gep(x_data, [x_at]))
            if p + 1 < P:
                x_at = builder.add(x_at, step)
            broadcast = builder.shuffle_vector(
                builder.insert_element(ir.Constant(vector_type, ir.Undefined), value,
                                       ir.Constant(ir.IntType(32), 0)),
                ir.Constant(vector_type, ir.Undefined), lane_zero)
            row = builder.extract_value(sums, p)
            for v in range(V):
                total = builder.call(fmuladd, [broadcast, weights[v],
                                               builder.extract_value(row, v)])
                row = builder.insert_value(row, total, v)
            sums = builder.insert_value(sums, row, p)
        return sums

    return tile(tile, x, x_index, x_step, w, w_index), codegen


def _fma_lanes_typer(tile, x, x_index, x_step, w, w_index, w_step):
    """The typing and code of :func:`tile_fma_lanes` (``w_step`` None: one weight row for all
    pixels) and :func:`tile_fma_pairs`."""
    shape = _fma_shape(tile, x, x_index, x_step, w, w_index)
    if shape is None or not (w_step is None or isinstance(w_step, types.Integer)):
        return None
    P, V, vector = shape
    L = vector.lanes

    def codegen(context, builder, signature, args):
        sums, x_array, x_at, step, w_array, w_at = args[:6]
        fmuladd = _fmuladd(builder, context.get_value_type(vector), vector)
        load = _loader(context, builder, vector)

        def weights():
            return [load(signature.args[4], w_array, _plus(builder, w_at, v * L))
                    for v in range(V)]

        shared = weights()
        step = context.cast(builder, step, signature.args[3], signature.args[2])
        if w_step is not None:
            w_step_value = context.cast(builder, args[6], signature.args[6], signature.args[5])
        for p in range(P):
            row = builder.extract_value(sums, p)
            row_weights = shared if w_step is None or p == 0 else weights()
            for v in range(V):
                value = load(signature.args[1], x_array, _plus(builder, x_at, v * L))
                row = builder.insert_value(row, builder.call(
                    fmuladd, [value, row_weights[v], builder.extract_value(row, v)]), v)
            sums = builder.insert_value(sums, row, p)
            if p + 1 < P:
                x_at = builder.add(x_at, step)
                if w_step is not None:
                    w_at = builder.add(w_at, w_step_value)
        return sums

    arguments = (tile, x, x_index, x_step, w, w_index) + (() if w_step is None else (w_step,))
    return tile(*arguments), codegen


@intrinsic
def tile_fma_lanes(typingctx, tile, x, x_index, x_step, w, w_index):
    """``tile`` plus, lane by lane, pixel ``p``'s inputs ``x[x_index + p·x_step:][:V·L]`` times
    the weights ``w[w_index:][:V·L]``.

    A depthwise layer's step: lanes are channels, each with its own weight.
    The input vectors are loaded once each (as an operand of the
    multiply-add), the weight vectors once for the ``P`` pixels.
    """
    return _fma_lanes_typer(tile, x, x_index, x_step, w, w_index, None)


@intrinsic
def tile_fma_pairs(typingctx, tile, x, x_index, x_step, y, y_index, y_step):
    """``tile`` plus, lane by lane, ``x[x_index + p·x_step:][:V·L] · y[y_index + p·y_step:][:V·L]``
    in row ``p``: both operands differ by row (a depthwise kernel gradient's products, a
    row a pixel, summed later by :func:`tile_accumulate`)."""
    return _fma_lanes_typer(tile, x, x_index, x_step, y, y_index, y_step)


def _spread(builder, vector, width, j):
    """``vector`` with the value in place ``j`` of each group of ``width`` lanes in all of the
    group's lanes (one shuffle)."""
    lanes = vector.type.count
    mask = ir.Constant(ir.VectorType(ir.IntType(32), lanes),
                       [lane // width * width + j for lane in range(lanes)])
    return builder.shuffle_vector(vector, ir.Constant(vector.type, ir.Undefined), mask)


@intrinsic
def tile_fma_groups(typingctx, tile, x, x_index, x_step, w, w_index, width):
    """``tile`` plus a grouped layer's products, each lane reading its own group's inputs.

    Lanes are filters in groups of ``width`` (a compile-time constant dividing
    the lanes), and each group reads as many input channels, the ones at its
    own lanes: pixel ``p``'s input vectors ``x[x_index + p·x_step:][:V·L]``.
    For ``j < width`` the input in place ``j`` of each group is broadcast
    across the group's lanes (one in-register shuffle, ``vpermilps`` on x86)
    and multiplied by the weight vectors ``w[w_index + j·V·L:][:V·L]``.  Only
    products within a group are formed: no zero weights, so inf and NaN stay
    in their group.
    """
    shape = _fma_shape(tile, x, x_index, x_step, w, w_index)
    if shape is None or not isinstance(width, types.IntegerLiteral):
        return None
    P, V, vector = shape
    L, G = vector.lanes, width.literal_value
    if not 1 <= G <= L or L % G:
        return None

    def codegen(context, builder, signature, args):
        sums, x_array, x_at, step, w_array, w_at = args[:6]
        vector_type = context.get_value_type(vector)
        load = _loader(context, builder, vector)

        fmuladd = _fmuladd(builder, vector_type, vector)
        weights = [[load(signature.args[4], w_array, _plus(builder, w_at, (j * V + v) * L))
                    for v in range(V)] for j in range(G)]
        step = context.cast(builder, step, signature.args[3], signature.args[2])
        for p in range(P):
            row = builder.extract_value(sums, p)
            for v in range(V):
                inputs = load(signature.args[1], x_array, _plus(builder, x_at, v * L))
                total = builder.extract_value(row, v)
                for j in range(G):
                    total = builder.call(fmuladd, [_spread(builder, inputs, G, j),
                                                   weights[j][v], total])
                row = builder.insert_value(row, total, v)
            sums = builder.insert_value(sums, row, p)
            if p + 1 < P:
                x_at = builder.add(x_at, step)
        return sums

    return tile(tile, x, x_index, x_step, w, w_index, width), codegen


@intrinsic
def tile_fma_spread(typingctx, tile, x, x_index, y, y_index):
    """``tile`` plus, in row ``j``, the inputs ``x[x_index:][:V·L]`` spread group by group
    times ``y[y_index:][:V·L]``: a grouped layer's kernel-gradient step.

    The tile's ``P`` rows are the channels of groups of ``P`` lanes (``P``
    divides the lanes): row ``j`` adds, lane by lane, the input in place
    ``j`` of the lane's group (see :func:`tile_fma_groups`) times the
    lane's output gradient.  Each operand vector is loaded once.
    """
    shape = _fma_shape(tile, x, x_index, x_index, y, y_index)  # (no step: checked twice)
    if shape is None or shape[2].lanes % shape[0]:
        return None
    P, V, vector = shape
    L = vector.lanes

    def codegen(context, builder, signature, args):
        sums, x_array, x_at, y_array, y_at = args
        vector_type = context.get_value_type(vector)
        load = _loader(context, builder, vector)

        fmuladd = _fmuladd(builder, vector_type, vector)
        inputs = [load(signature.args[1], x_array, _plus(builder, x_at, v * L)) for v in range(V)]
        grads = [load(signature.args[3], y_array, _plus(builder, y_at, v * L)) for v in range(V)]
        for j in range(P):
            row = builder.extract_value(sums, j)
            for v in range(V):
                row = builder.insert_value(row, builder.call(fmuladd, [
                    _spread(builder, inputs[v], P, j), grads[v], builder.extract_value(row, v)]),
                    v)
            sums = builder.insert_value(sums, row, j)
        return sums

    return tile(tile, x, x_index, y, y_index), codegen


@intrinsic
def tile_fma_outer(typingctx, tile, x, x_index, x_step, w, w_index, w_step, pixels):
    """``tile`` plus, in row ``c·pixels + p``, lane by lane,
    ``x[x_index + p·x_step:][:V·L] · w[w_index + c·w_step:][:V·L]``: every pixel's values
    times every channel's weights (the input gradient of a layer with few channels, lanes
    along the filters, summed across lanes afterwards).

    ``pixels`` is a compile-time constant dividing the tile's rows.  Each
    operand vector is loaded once.
    """
    shape = _fma_shape(tile, x, x_index, x_step, w, w_index)
    if (shape is None or not isinstance(w_step, types.Integer)
            or not isinstance(pixels, types.IntegerLiteral)):
        return None
    P, V, vector = shape
    L, PIXELS = vector.lanes, pixels.literal_value
    if PIXELS < 1 or P % PIXELS:
        return None

    def codegen(context, builder, signature, args):
        sums, x_array, x_at, x_step_value, w_array, w_at, w_step_value = args[:7]
        load = _loader(context, builder, vector)
        fmuladd = _fmuladd(builder, context.get_value_type(vector), vector)
        x_step_value = context.cast(builder, x_step_value, signature.args[3], signature.args[2])
        w_step_value = context.cast(builder, w_step_value, signature.args[6], signature.args[5])
        values = []
        for p in range(PIXELS):
            values.append([load(signature.args[1], x_array, _plus(builder, x_at, v * L))
                           for v in range(V)])
            if p + 1 < PIXELS:
                x_at = builder.add(x_at, x_step_value)
        for c in range(P // PIXELS):
            weights = [load(signature.args[4], w_array, _plus(builder, w_at, v * L))
                       for v in range(V)]
            if c + 1 < P // PIXELS:
                w_at = builder.add(w_at, w_step_value)
            for p in range(PIXELS):
                row = builder.extract_value(sums, c * PIXELS + p)
                for v in range(V):
                    row = builder.insert_value(row, builder.call(
                        fmuladd, [values[p][v], weights[v], builder.extract_value(row, v)]), v)
                sums = builder.insert_value(sums, row, c * PIXELS + p)
        return sums

    return tile(tile, x, x_index, x_step, w, w_index, w_step, pixels), codegen


@intrinsic
def tile_fma_window(typingctx, tile, x, x_index, row_step, column_step, y, y_index, columns,
                    total, rows_inside, columns_inside, zeros):
    """``tile`` plus, in row ``ki·columns + kj``, lane by lane,
    ``x[x_index + ki·row_step + kj·column_step:][:V·L] · y[y_index:][:V·L]``: one output
    pixel's products with every tap of a depthwise window (its kernel gradient).

    ``columns`` (the window's width) and ``total`` are compile-time
    constants; ``total`` True makes the tile's last row the running sum of
    ``y`` (the bias gradient), the rows before it a whole number of window
    rows.  Tap ``(ki, kj)`` reads the input only where bit ``ki`` of
    ``rows_inside`` and bit ``kj`` of ``columns_inside`` are set (the tap is
    inside the image), and otherwise reads ``zeros[:V·L]`` (an array of
    zeros), its index never used: at a border, ``x_index`` may lie outside
    ``x``.  Constant masks of all ones compile to plain loads.  The ``y``
    vectors are loaded once.

    Selecting the address, not the loaded value, keeps LLVM from branching
    around each load; the zeros come from an array, not a constant, for the
    same reason (LLVM sees through a constant and branches again).  The
    depthwise kernel gradient took 0.82 of the value select's time on
    14²×576 N=8, 0.88 at N=1, 0.90 on 56²×144 N=8.
    """
    shape = _fma_shape(tile, x, x_index, row_step, y, y_index)
    if (shape is None or not isinstance(column_step, types.Integer)
            or not isinstance(columns, types.IntegerLiteral)
            or not isinstance(total, types.BooleanLiteral)
            or not all(isinstance(m, types.Integer) for m in (rows_inside, columns_inside))
            or not _contiguous_float_array(zeros) or zeros.dtype != x.dtype):
        return None
    P, V, vector = shape
    L, KW, TOTAL = vector.lanes, columns.literal_value, total.literal_value
    taps = P - TOTAL
    if KW < 1 or taps < KW or taps % KW:
        return None

    def codegen(context, builder, signature, args):
        sums, x_array, x_at, row, column, y_array, y_at = args[:7]
        index_type = signature.args[2]
        load = _loader(context, builder, vector)
        fmuladd = _fmuladd(builder, context.get_value_type(vector), vector)
        row, column, rows_mask, columns_mask = (
            context.cast(builder, value, ty, index_type)
            for value, ty in zip((row, column, args[9], args[10]),
                                 (signature.args[3], signature.args[4], signature.args[9],
                                  signature.args[10])))
        vector_type = context.get_value_type(vector)
        zero_vectors = [_vector_pointer(context, builder, signature.args[11], args[11],
                                        ir.Constant(x_at.type, v * L), vector_type)
                        for v in range(V)]
        align = vector.dtype.bitwidth // 8

        def bit(mask, position):
            return builder.icmp_unsigned("!=", builder.and_(
                mask, ir.Constant(mask.type, 1 << position)), ir.Constant(mask.type, 0))

        grads = [load(signature.args[5], y_array, _plus(builder, y_at, v * L)) for v in range(V)]
        for t in range(taps):
            ki, kj = divmod(t, KW)
            at = builder.add(builder.add(x_at, builder.mul(row, ir.Constant(row.type, ki))),
                             builder.mul(column, ir.Constant(column.type, kj)))
            inside = builder.and_(bit(rows_mask, ki), bit(columns_mask, kj))
            sum_row = builder.extract_value(sums, t)
            for v in range(V):
                pointer = builder.select(inside, _vector_pointer(
                    context, builder, signature.args[1], x_array, _plus(builder, at, v * L),
                    vector_type), zero_vectors[v])
                value = builder.load(pointer, align=align)
                sum_row = builder.insert_value(sum_row, builder.call(
                    fmuladd, [value, grads[v], builder.extract_value(sum_row, v)]), v)
            sums = builder.insert_value(sums, sum_row, t)
        if TOTAL:
            sum_row = builder.extract_value(sums, taps)
            for v in range(V):
                sum_row = builder.insert_value(sum_row, builder.fadd(
                    builder.extract_value(sum_row, v), grads[v]), v)
            sums = builder.insert_value(sums, sum_row, taps)
        return sums

    arguments = (tile, x, x_index, row_step, column_step, y, y_index, columns, total,
                 rows_inside, columns_inside, zeros)
    return tile(*arguments), codegen


@intrinsic
def tile_accumulate(typingctx, out, index, tile):
    """``out[index:][:V·L] +=`` the sum of the tile's rows (in row order, then added to ``out``)."""
    shape = _tile_shape(tile)
    if (shape is None or not _contiguous_float_array(out) or out.dtype != shape[2].dtype
            or not isinstance(index, types.Integer)):
        return None
    P, V, vector = shape
    L = vector.lanes

    def codegen(context, builder, signature, args):
        array, at, sums = args
        vector_type = context.get_value_type(vector)
        align = vector.dtype.bitwidth // 8
        for v in range(V):
            total = builder.extract_value(builder.extract_value(sums, 0), v)
            for p in range(1, P):
                total = builder.fadd(total, builder.extract_value(builder.extract_value(sums, p),
                                                                  v))
            pointer = _vector_pointer(context, builder, signature.args[0], array,
                                      _plus(builder, at, v * L), vector_type)
            builder.store(builder.fadd(builder.load(pointer, align=align), total), pointer,
                          align=align)
        return context.get_dummy_value()

    return types.none(out, index, tile), codegen


def _tile_store_typer(out, index, step, tile, nontemporal):
    """The typing and code of :func:`tile_store` (``nontemporal``: of :func:`tile_stream`)."""
    shape = _tile_shape(tile)
    if (shape is None or not _contiguous_float_array(out) or out.dtype != shape[2].dtype
            or not (isinstance(index, types.Integer) and isinstance(step, types.Integer))):
        return None
    P, V, vector = shape
    L = vector.lanes
    # Non-temporal stores of a vector need it aligned to its size (else a fault).
    align = (L if nontemporal else 1) * vector.dtype.bitwidth // 8

    def codegen(context, builder, signature, args):
        array, at, pixel_step, sums = args
        vector_type = context.get_value_type(vector)
        pixel_step = context.cast(builder, pixel_step, signature.args[2], signature.args[1])
        for p in range(P):
            row = builder.extract_value(sums, p)
            for v in range(V):
                pointer = _vector_pointer(context, builder, signature.args[0], array,
                                          _plus(builder, at, v * L), vector_type)
                store = builder.store(builder.extract_value(row, v), pointer, align=align)
                if nontemporal:
                    store.set_metadata("nontemporal", builder.module.add_metadata(
                        [ir.Constant(ir.IntType(32), 1)]))
            if p + 1 < P:
                at = builder.add(at, pixel_step)
        return context.get_dummy_value()

    return types.none(out, index, step, tile), codegen


@intrinsic
def tile_store(typingctx, out, index, step, tile):
    """Write pixel ``p`` of ``tile`` to ``out[index + p·step :][: V·L]``."""
    return _tile_store_typer(out, index, step, tile, nontemporal=False)


@intrinsic
def tile_stream(typingctx, out, index, step, tile):
    """:func:`tile_store`, non-temporal: to memory, without reading the lines first.

    For outputs larger than the caches, which a plain store first reads
    (measured: a copy of 26 MB ran at 17 GB/s with plain stores, 25 with
    these).  Each vector's address must be a multiple of its size (the
    caller checks the array's; a misaligned one faults), and the stores
    must be followed by :func:`stream_fence` before the results are read
    by another thread.
    """
    return _tile_store_typer(out, index, step, tile, nontemporal=True)


@intrinsic
def stream_fence(typingctx):
    """Order the non-temporal stores before this point before any store after it.

    ``sfence`` on x86 (where an ordinary fence compiles to nothing and does
    not cover non-temporal stores), a full fence elsewhere.
    """

    def codegen(context, builder, signature, args):
        if _X86:
            builder.call(cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse.sfence"), [])
        else:
            builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def tile_scatter(typingctx, out, index, pixel_step, lane_step, valid, tile):
    """Write lane ``l < valid`` of pixel ``p`` to ``out[index + p·pixel_step + l·lane_step]``.

    One scalar store per value: for outputs whose filters are not contiguous
    (channels_first) or a block's filters past the last (``valid`` < ``V·L``).
    Straight-line code, where a loop over a buffer compiled 2-3 s longer.
    """
    shape = _tile_shape(tile)
    if (shape is None or not _contiguous_float_array(out) or out.dtype != shape[2].dtype
            or not all(isinstance(i, types.Integer)
                       for i in (index, pixel_step, lane_step, valid))):
        return None
    P, V, vector = shape
    L = vector.lanes

    def codegen(context, builder, signature, args):
        array, at, pixel, lane, count, sums = (
            context.cast(builder, value, ty, types.intp) if 1 <= i <= 4 else value
            for i, (value, ty) in enumerate(zip(args, signature.args)))
        data = context.make_array(signature.args[0])(context, builder, array).data
        for p in range(P):
            row = builder.extract_value(sums, p)
            for v in range(V):
                values = builder.extract_value(row, v)
                for j in range(L):
                    filter_index = ir.Constant(count.type, v * L + j)
                    with builder.if_then(builder.icmp_signed("<", filter_index, count)):
                        offset = builder.add(at, builder.mul(filter_index, lane))
                        builder.store(builder.extract_element(values,
                                                              ir.Constant(ir.IntType(32), j)),
                                      builder.gep(data, [offset]))
            if p + 1 < P:
                at = builder.add(at, pixel)
        return context.get_dummy_value()

    return types.none(out, index, pixel_step, lane_step, valid, tile), codegen


@intrinsic
def tile_relu(typingctx, tile):
    """``max(tile, 0)``, NaN kept (as ``value < 0 ? 0 : value``)."""
    shape = _tile_shape(tile)
    if shape is None:
        return None
    P, V, vector = shape

    def codegen(context, builder, signature, args):
        sums = args[0]
        zero = ir.Constant(context.get_value_type(vector), None)
        for p in range(P):
            row = builder.extract_value(sums, p)
            for v in range(V):
                value = builder.extract_value(row, v)
                negative = builder.fcmp_ordered("<", value, zero)
                row = builder.insert_value(row, builder.select(negative, zero, value), v)
            sums = builder.insert_value(sums, row, p)
        return sums

    return tile(tile), codegen


def _prefetch_typer(array, index, locality):
    """The typing and code of :func:`prefetch` and :func:`prefetch_l2` (``llvm.prefetch``
    locality 3 and 2)."""
    if not (_contiguous_float_array(array) and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        address = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(8).as_pointer())
        int32 = ir.IntType(32)
        builder.call(cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [address.type, int32, int32, int32]),
            "llvm.prefetch.p0i8"), [address, int32(0), int32(locality), int32(1)])
        return context.get_dummy_value()

    return types.none(array, index), codegen


@intrinsic
def prefetch(typingctx, array, index):
    """Ask the CPU to bring the cache line of ``array``'s flat element ``index`` into its caches.

    A hint (``llvm.prefetch``, read, kept in every level): it never faults,
    so ``index`` may lie past the array's end.  For loops whose next data
    the hardware prefetchers do not foresee, such as a vector of channels
    read pixel by pixel, one cache line in each pixel's.
    """
    return _prefetch_typer(array, index, 3)


@intrinsic
def prefetch_l2(typingctx, array, index):
    """:func:`prefetch` with the second-level hint (``llvm.prefetch`` locality 2, x86
    ``prefetcht1``), for lines wanted a whole task later.

    A CPU may still fill its first level too.  On the depthwise forward (first-generation
    EPYC) it measured 0.87-0.96 of the unprefetched time, the first-level hint 0.84-0.98:
    the same within the noise.
    """
    return _prefetch_typer(array, index, 2)
