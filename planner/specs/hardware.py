"""Cluster specs: accelerator, node, scale-out network, reliability, price, and cost-model efficiencies.

A spec is a YAML file in `cluster_specs/` with units written out (`80GiB`, `400Gb/s`, `989TFLOPs`,
`5us`). It is parsed once, here, into a frozen `ClusterSpec` whose fields are SI numbers whose unit is
in the name (`hbm_bytes`, `link_bytes_per_s`, `latency_s`). Unknown keys, missing keys, bad units and
non-positive sizes are `PlannerInputError`s naming the file and the key.

`Efficiency` holds the cost model's free parameters (matmul efficiency curve, bandwidth efficiencies,
overlap, overheads, memory reserve). Their defaults are assumed values stated below; `planner
calibrate` fits them to measured runs and writes `<name>.calibrated.yaml` with the fitted values.
"""

from __future__ import annotations

import math
import os
import typing
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from planner.specs import units
from planner.errors import PlannerInputError, validation_input_error
from planner.io import load_yaml_file

DTYPES = ("bf16", "fp16", "fp8", "fp32")
# The number format a run trains in when none is given: the first of these the accelerator has a peak for. bf16 on
# Ampere, Hopper, Blackwell and MI200 and later (today's stacks' default); fp16 with dynamic loss scaling where the
# tensor cores have no bf16 (V100: NVIDIA's V100 datasheet lists FP16 tensor-core FLOP/s only), as Megatron-LM and
# DeepSpeed ran there (the ZeRO paper's V100 runs); fp32 on a CPU. fp8 is never assumed: it is a recipe one chooses.
DEFAULT_TRAINING_DTYPES = ("bf16", "fp16", "fp32")
# Upper bounds that no real machine approaches but that keep a typo from building a 10^9-vertex topology
# graph (assumed: the largest scale-up domain sold is 576 GPUs, GB200 NVL576; the largest systems have
# tens of thousands of nodes).
MAX_ACCELERATORS_PER_NODE = 1024
MAX_NICS_PER_NODE = 1024
MAX_NODES = 1_000_000


def _unit(parser):
    """A pydantic pre-validator that converts a unit string with `parser` (error text names the key)."""

    def convert(value):
        if value is None:
            return None
        try:
            return parser(value, "value")
        except PlannerInputError as error:
            # pydantic prefixes the key path; keep only the reason.
            raise ValueError(str(error).removeprefix("value: ")) from None

    return BeforeValidator(convert)


# Plausible ranges: a value outside is a typo (a unit prefix off by 10^3 or more, `1e-300`, `.inf`) that
# would otherwise reach the cost model as NaN or overflow. Generous on purpose (assumed): 1 GFLOP/s is below
# one CPU core, 1 EFLOP/s is 200x a B200's dense fp8 peak (4.5 PFLOP/s, Blackwell Technical Brief);
# 1 MB/s is below any link, 1 PB/s is 100x HBM3e (8 TB/s); memories from 1 MiB to 1 PiB; latencies,
# checkpoint restarts and MTBFs below 1 s ... 100 years are kept where each makes sense.
MIN_FLOPS, MAX_FLOPS = 1e9, 1e18
MIN_BYTES_PER_S, MAX_BYTES_PER_S = 1e6, 1e15
MIN_BYTES, MAX_BYTES = 2.0**20, 2.0**50
MAX_SECONDS = 100 * 365.25 * 86400.0

# Sizes and durations in a spec carry their unit (the keys `hbm`, `latency`, `mtbf_per_gpu` do not name one);
# a bare 0 is still accepted (calibrate writes `memory_reserve: 0.0`).
Bytes = Annotated[float, _unit(lambda v, w: units.parse_bytes(v, w, bare=False)), Field(ge=MIN_BYTES, le=MAX_BYTES)]
BytesOrZero = Annotated[float, _unit(lambda v, w: units.parse_bytes(v, w, allow_zero=True, bare=False)),
                        Field(le=MAX_BYTES)]
BytesPerSecond = Annotated[float, _unit(units.parse_bandwidth), Field(ge=MIN_BYTES_PER_S, le=MAX_BYTES_PER_S)]
FlopsPerSecond = Annotated[float, _unit(units.parse_flops_rate), Field(ge=MIN_FLOPS, le=MAX_FLOPS)]
Watts = Annotated[float, _unit(units.parse_power), Field(ge=1.0, le=1e5)]  # a board, 1 W to 100 kW
Seconds = Annotated[float, _unit(lambda v, w: units.parse_duration(v, w, allow_zero=True, bare=False)),
                    Field(le=MAX_SECONDS)]
# Mean time between failures per GPU: 0 would mean failing continuously (goodput divides by it); specs for
# CPUs that never fail in practice write very long ones, so only a finite value is asked for above.
MAX_MTBF_SECONDS = 1e15
PositiveSeconds = Annotated[float, _unit(lambda v, w: units.parse_duration(v, w, bare=False)),
                            Field(gt=0, le=MAX_MTBF_SECONDS)]


def _takes_booleans(annotation) -> bool:
    """Whether a field's type admits True/False (bool itself, or a union or annotation holding it)."""
    if annotation is bool:
        return True
    return any(_takes_booleans(arg) for arg in typing.get_args(annotation))


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_yaml_booleans_for_numbers(cls, value, info):
        """YAML reads yes/no/on/off/true/false as booleans, and pydantic's lax mode took them as 1 and 0:
        `accelerators_per_node: true` was one GPU a node, `price_per_accelerator_hour: on` $1 an hour."""
        if isinstance(value, bool) and not _takes_booleans(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"expected a number or text, got {str(value).lower()} (YAML reads yes, no, on, off, "
                             "true and false as booleans)")
        return value


class PeakFlops(_Frozen):
    """Dense peak FLOP/s per accelerator for each dtype (no sparsity). Missing dtype = unsupported."""

    bf16: FlopsPerSecond | None = None
    fp16: FlopsPerSecond | None = None
    fp8: FlopsPerSecond | None = None
    fp32: FlopsPerSecond | None = None


class Accelerator(_Frozen):
    name: str
    peak_flops: PeakFlops
    hbm_bytes: Bytes = Field(alias="hbm")
    hbm_bytes_per_s: BytesPerSecond = Field(alias="hbm_bandwidth")
    # Board power (the datasheet's max TDP), for the energy of a plan; None = not stated in the spec.
    power_w: Watts | None = Field(default=None, alias="power")
    # CUDA compute capability (major.minor, NVIDIA's CUDA GPUs table): picks NCCL's per-architecture tuner
    # constants (planner.cost.collectives.architecture). None: not an NVIDIA GPU or not stated (Hopper's, assumed).
    compute_capability: float | None = Field(default=None, ge=1.0, le=99.0, allow_inf_nan=False)
    # Streaming multiprocessors (AMD: compute units) per accelerator, from its whitepaper or a device query: the
    # share of them that communication kernels running beside compute take (planner.frameworks.moe, the all-to-all
    # overlaps). None: Hopper's 132 (frameworks.moe.HOPPER_SMS), assumed.
    sms: int | None = Field(default=None, gt=0, le=4096)
    # The number format plans train in when --dtype is not given (ClusterSpec.default_training_dtype). None: the
    # first of DEFAULT_TRAINING_DTYPES the peaks list; a spec whose listed bf16 is not what one would train in
    # (cpu-local's is an effective rate 20x below fp32) names its own.
    default_dtype: Literal["bf16", "fp16", "fp8", "fp32"] | None = None

    @model_validator(mode="after")
    def _default_dtype_has_a_peak(self) -> "Accelerator":
        if self.default_dtype is not None and getattr(self.peak_flops, self.default_dtype) is None:
            listed = [d for d in DTYPES if getattr(self.peak_flops, d) is not None]
            raise ValueError(f"default_dtype {self.default_dtype} has no peak_flops entry (listed: {', '.join(listed)})")
        return self


class ScaleUp(_Frozen):
    """The in-node link between accelerators (NVLink/NVSwitch, Infinity Fabric, shared memory)."""

    link_bytes_per_s_per_direction: BytesPerSecond = Field(alias="bandwidth_per_direction")
    latency_s: Seconds = Field(alias="latency")
    # NVLink SHARP: the switch reduces and multicasts, which NCCL runs as its NVLS / NVLS-tree algorithms
    # (NCCL needs an NVSwitch and compute capability 9.0+: src/graph/search.cc:1124). Third-generation
    # NVSwitch (H100/H200, NVIDIA H100 Tensor Core GPU Architecture whitepaper) and the NVLink 5 switch
    # (B200, NVIDIA Blackwell Architecture Technical Brief) have it; A100's NVSwitch does not.
    nvls: bool = False
    # Where the fabric is point-to-point links rather than a switch (AMD Infinity Fabric): the bandwidth of
    # one link, and every link as [accelerator, accelerator, parallel links]. Collectives inside the node
    # then run as rings over these links (planner.specs.topology), and bandwidth_per_direction is the most one
    # accelerator can push to accelerators outside its package (checked).
    link_unit_bytes_per_s: BytesPerSecond | None = Field(default=None, alias="link_bandwidth_per_direction")
    links: tuple[tuple[int, int, int], ...] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _links_need_their_bandwidth(self) -> "ScaleUp":
        if (self.links is None) != (self.link_unit_bytes_per_s is None):
            raise ValueError("links and link_bandwidth_per_direction go together: give both or neither")
        for a, b, count in self.links or ():
            if a == b or min(a, b) < 0 or count < 1:
                raise ValueError(f"links: expected [accelerator, other accelerator, links >= 1], got {[a, b, count]}")
        return self


class Package(_Frozen):
    """Accelerators sharing one package (MI250X: two GCDs) and the faster link between them. A level below
    the node's fabric: a group whose members sit in one package talks over this link, not the fabric."""

    accelerators_per_package: int = Field(gt=1, le=MAX_ACCELERATORS_PER_NODE)
    link_bytes_per_s_per_direction: BytesPerSecond = Field(alias="bandwidth_per_direction")
    latency_s: Seconds = Field(alias="latency")


class Node(_Frozen):
    accelerators_per_node: int = Field(gt=0, le=MAX_ACCELERATORS_PER_NODE)
    scale_up: ScaleUp
    host_memory_bytes: Bytes = Field(alias="host_memory")
    pcie_bytes_per_s_per_accelerator: BytesPerSecond = Field(alias="pcie_bandwidth_per_accelerator")
    nvme_bytes_per_s: BytesPerSecond = Field(alias="nvme_bandwidth")
    # Node-local NVMe capacity for ZeRO-Infinity offload; None = not stated (no capacity check).
    nvme_capacity_bytes: Bytes | None = Field(default=None, alias="nvme_capacity")
    # Host-side Adam throughput for ZeRO-Offload, parameters updated per second per node (assumed
    # from DeepSpeed CPU-Adam figures unless calibrated).
    host_adam_params_per_s: float = Field(default=1.0e9, ge=1e3, allow_inf_nan=False)  # ge: overflowed below
    # True for CPU "devices": ranks split the node's cores between them (OMP_NUM_THREADS = cores / ranks),
    # so a job with fewer ranks than accelerators_per_node gets proportionally more compute per rank.
    compute_shared_by_ranks: bool = False
    # Optional third level inside the node (None: every accelerator hangs off the scale-up fabric alone).
    package: Package | None = None

    @model_validator(mode="after")
    def _packages_divide_node(self) -> "Node":
        if self.package is not None and self.accelerators_per_node % self.package.accelerators_per_package:
            raise ValueError(f"package.accelerators_per_package({self.package.accelerators_per_package}) does not divide "
                             f"accelerators_per_node({self.accelerators_per_node})")
        if self.scale_up.links is not None:
            self._check_links()
        return self

    def _check_links(self) -> None:
        """Link ends inside the node; the package link and the fastest cross-package total as the spec states."""
        up, n = self.scale_up, self.accelerators_per_node
        if any(max(a, b) >= n for a, b, _ in up.links):
            raise ValueError(f"scale_up.links: an accelerator index is >= accelerators_per_node({n})")
        neighbours: dict[int, set[int]] = {}
        for a, b, _ in up.links:
            neighbours.setdefault(a, set()).add(b)
            neighbours.setdefault(b, set()).add(a)
        reached, frontier = {0}, [0]  # every accelerator reachable over the links (else no ring or path exists)
        while frontier:
            for there in neighbours.get(frontier.pop(), set()) - reached:
                reached.add(there)
                frontier.append(there)
        if len(reached) < n:
            raise ValueError(f"scale_up.links leave accelerators {sorted(set(range(n)) - reached)} unreachable "
                             "from accelerator 0")
        per_package = self.package.accelerators_per_package if self.package else 1
        outside = [0.0] * n
        for a, b, count in up.links:
            bandwidth = count * up.link_unit_bytes_per_s
            if a // per_package == b // per_package:
                if self.package and abs(bandwidth - self.package.link_bytes_per_s_per_direction) > 1e-6 * bandwidth:
                    raise ValueError(f"scale_up.links [{a}, {b}, {count}] give {bandwidth / 1e9:g} GB/s inside a package "
                                     f"but package.bandwidth_per_direction is {self.package.link_bytes_per_s_per_direction / 1e9:g} GB/s")
                continue
            outside[a] += bandwidth
            outside[b] += bandwidth
        if abs(max(outside) - up.link_bytes_per_s_per_direction) > 1e-6 * max(outside):
            raise ValueError(f"scale_up.bandwidth_per_direction is {up.link_bytes_per_s_per_direction / 1e9:g} GB/s but the "
                             f"fastest accelerator's links outside its package give {max(outside) / 1e9:g} GB/s")


class Dragonfly(_Frozen):
    """Scale-out as a dragonfly (HPE Slingshot, Cray EX): nodes in groups whose switches are all-to-all
    connected (non-blocking inside a group with adaptive routing), groups joined by global links. Traffic
    leaving a group shares the group's global bandwidth."""

    nodes_per_group: int = Field(gt=0, le=MAX_NODES)
    # Sum of the group's global links, per direction.
    global_bytes_per_s_per_group: BytesPerSecond = Field(alias="global_bandwidth_per_group")


class Network(_Frozen):
    nics_per_node: int = Field(ge=0, le=MAX_NICS_PER_NODE)
    nic_bytes_per_s_per_direction: BytesPerSecond = Field(alias="nic_bandwidth")
    latency_s: Seconds = Field(alias="latency")
    topology: Literal["fat-tree", "rail-optimized", "dragonfly", "single-node"]
    # Ratio of node-facing to spine-facing bandwidth at the leaf; 1 = non-blocking.
    oversubscription: float = Field(default=1.0, ge=1.0, le=1e3)
    # Only with topology dragonfly: the groups and global links (None: the leaf/spine taper above alone).
    dragonfly: Dragonfly | None = None

    @model_validator(mode="after")
    def _dragonfly_only_for_dragonfly(self) -> "Network":
        if self.dragonfly is not None and self.topology != "dragonfly":
            raise ValueError(f"a dragonfly block needs topology: dragonfly (got {self.topology})")
        return self

    @model_validator(mode="after")
    def _taper_only_where_a_spine_carries_traffic(self) -> "Network":
        # A rail-optimized fabric here joins each NIC to its rail and nothing crosses a spine: a ring between GPUs on
        # different rails goes over the node's scale-up link to the GPU on the right rail first, as NCCL's PXN does
        # (specs/topology.build_graph). A taper would be read and change nothing.
        if self.topology == "rail-optimized" and self.oversubscription != 1.0:
            raise ValueError(f"oversubscription {self.oversubscription:g} with topology rail-optimized: rails carry the "
                             "traffic without crossing a spine, so a taper changes nothing; describe a tapered fabric "
                             "as fat-tree, or set oversubscription: 1")
        return self


class Reliability(_Frozen):
    """Inputs to goodput: failures per GPU-time and checkpoint write speed."""

    mtbf_per_gpu_s: PositiveSeconds = Field(alias="mtbf_per_gpu")
    checkpoint_bytes_per_s: BytesPerSecond = Field(alias="checkpoint_bandwidth")
    restart_s: Seconds = Field(alias="restart_time")
    # How the job checkpoints (planner.cost.goodput): training stops for the whole write (sync), or only for
    # the copy to host memory with the write in the background (async: MegaScale's two-stage checkpoint,
    # PyTorch DCP async_save), restoring from host memory after a failure (in-memory: Gemini).
    checkpoint_mode: Literal["sync", "async", "in-memory"] = Field(default="sync", alias="checkpoint")


# In sustained training the clock sits ~10% below the boost clock the datasheet peak assumes (power/thermal
# limit), while a short matmul benchmark (MAMF: 50 warm-up + 100 timed iterations per shape) runs near boost.
# No published benchmark measures the sustained clock (the MAMF benchmarks README only advises sampling the clock;
# it has no sustained "MSMF" figure), so 0.9 was assumed; this project's H200 profile has since measured it: an
# 8192^3 bf16 GEMM run back to back for 15 s holds 657 TFLOP/s at the 700 W cap (SM clock 1425-1440 MHz of 1980)
# against 725 in a burst, 0.906 (profiles/h200-kernels.json; tests/cost/test_h200_kernel_profile.py). The
# large-GEMM ceiling is MAMF x 0.9.
SUSTAINED_CLOCK_FACTOR = 0.9


# The least efficiency a spec may give (a fraction of a peak): 1e-4, ten times below the least `planner calibrate`
# fits (calibrate.fitting.PARAMETERS). Near 0 (1e-300) a plan overflowed to 3e+301 days without a word.
MIN_EFFICIENCY = 1e-4


class Efficiency(_Frozen):
    """Free parameters of the cost model. Defaults are assumptions; `planner calibrate` fits them.

    matmul_efficiency(size) = matmul_peak_fraction / (1 + (matmul_half_size / size) ** matmul_size_exponent),
    with size the harmonic mean of a GEMM's (M, N, K): small GEMMs run far from peak (Calculon's
    efficiency-vs-size curve rather than one scalar).
    """

    # The large-GEMM ceiling = (best-shape matmul throughput / datasheet peak) x SUSTAINED_CLOCK_FACTOR.
    # Per accelerator it is data in the cluster spec (efficiency: block), from the "Maximum Achievable
    # Matmul FLOPS" (MAMF) comparison table (stas00/ml-engineering compute/accelerator/README.md; V100, which
    # the table lacks, from DeepBench's V100 GEMM sheet; the derivation and the rows are in docs/gemm_ceiling.md).
    # This default is the H100 derivation, kept for devices with no published figure here (CPUs): a measured
    # 8192^3 bf16 GEMM on H100 reaches 798/989 = 0.81 of peak (REFERENCE.md; MAMF's H100 row: 794.5/989 = 0.803)
    # x 0.9 ~= 0.72.
    matmul_peak_fraction: float = Field(default=0.72, ge=MIN_EFFICIENCY, le=1)
    # fp8 GEMMs' ceiling (a fraction of the fp8 peak) relative to matmul_peak_fraction: the MAMF table's
    # fp8 efficiency / its bf16 efficiency for the same accelerator (H100 70.9% / 80.3% = 0.882), so the
    # shared sustained-clock factor cancels and a calibrated matmul_peak_fraction moves fp8 GEMMs too.
    # 1 = fp8 GEMMs reach the bf16 fraction of their own peak (the planner's behaviour before the table).
    fp8_matmul_relative_efficiency: float = Field(default=1.0, ge=MIN_EFFICIENCY, le=1)
    # GEMM size at which efficiency is half the ceiling. None = derived from the roofline ridge: a
    # 16-bit n x n x n GEMM does 2n^3 FLOP on 6n^2 bytes, so it turns compute-bound at
    # n = 3 x peak / HBM bandwidth (A100 ~460, H100 ~890): faster GPUs need bigger GEMMs.
    matmul_half_size: float | None = Field(default=None, gt=0, le=1e7)  # le: a 10M-wide GEMM
    matmul_size_exponent: float = Field(default=1.5, gt=0, le=10)
    # Flash-attention core relative to a GEMM of the same size (assumed: attention kernels run ~20% below GEMMs).
    attention_relative_efficiency: float = Field(default=0.8, ge=MIN_EFFICIENCY, le=1.5)
    # Achieved fraction of HBM bandwidth for memory-bound kernels (elementwise, norms, optimizer).
    hbm_efficiency: float = Field(default=0.7, ge=MIN_EFFICIENCY, le=1)
    # Optimizer-step throughput relative to hbm_efficiency x HBM bandwidth (gradient clipping, flattening
    # and ZeRO bookkeeping ride on the step); 1 = the Adam traffic alone. Assumed 1 until calibrated.
    optimizer_relative_efficiency: float = Field(default=1.0, ge=MIN_EFFICIENCY, le=1)
    # Achieved fraction of link bandwidth for NCCL-style collectives: it scales the NVLink per-direction bandwidth (W_up) and
    # the per-rank NIC share (W_out) before NCCL's own protocol factors and caps (cost/collectives.py), so a spec sets it to
    # measured nccl-tests busbw / the model's busbw at efficiency 1 for the same group and size. The DGX, H800 and Jean Zay
    # specs do (their efficiency: blocks cite the measurements: NVLink 0.76-0.81, InfiniBand 0.96). The 0.75 default is an
    # assumption, kept where no measurement was found (DGX-2 NVLink, Frontier's Infinity Fabric and Slingshot, Omni-Path, CPUs).
    scale_up_bandwidth_efficiency: float = Field(default=0.75, ge=MIN_EFFICIENCY, le=1)
    scale_out_bandwidth_efficiency: float = Field(default=0.75, ge=MIN_EFFICIENCY, le=1)
    # Residuals of the overlap schedule (cost/overlap.py, cost/data_parallel.py): the fraction of the data-parallel /
    # tensor-parallel communication the schedule can hide (prefetch, buckets behind backward, TP chunks
    # behind GEMMs) that is hidden in practice. 1 = the schedule's ideal (assumed until calibrated: the
    # mechanism that would lower it, compute slowed by NCCL kernels sharing the SMs, has no derived size);
    # calibration fits less where ranks do not overlap (CPU gloo: 0.1).
    dp_overlap: float = Field(default=1.0, ge=0, le=1)
    tp_overlap: float = Field(default=1.0, ge=0, le=1)
    # Fixed costs: per optimizer step (launch, sync, logging), per micro-batch per stage, and per layer per
    # micro-batch (kernel launches / framework dispatch of one layer's forward and backward). Assumed 0 on
    # GPUs until calibrated; they dominate small models on CPUs.
    step_overhead_s: float = Field(default=0.0, ge=0, le=3600)
    microbatch_overhead_s: float = Field(default=0.0, ge=0, le=3600)
    layer_overhead_s: float = Field(default=0.0, ge=0, le=3600)
    # Multiplies every link latency in the collective model (per-call software latency, e.g. gloo ~10x NCCL).
    latency_scale: float = Field(default=1.0, gt=0, le=1e6)
    # Memory the allocator cannot give to tensors beyond the named terms of cost/memory.py (CUDA context
    # and workspaces, NCCL buffers, TE userbuffers): the fraction of the bytes freed and re-allocated every
    # micro-batch lost to fragmentation (assumed 5%; GMLake measured ~15% on average for large models,
    # STWeaver up to 43%), and a fixed remainder for calibration to fit (0: nothing is known to be missing).
    memory_reserve_fraction: float = Field(default=0.05, ge=0, lt=1)
    memory_reserve_bytes: BytesOrZero = Field(default=0.0, ge=0, alias="memory_reserve")


class CalibratedOn(_Frozen):
    """What `planner calibrate` measured its fit against, written beside the efficiency block it fitted.

    The 90% band of the step-time error on held-out rows (rows no fit of the nested cross-validation saw, or the
    user's --holdout-source rows), as measured / predicted step time at the 5th and 95th percentiles: simulate
    and optimize scale a prediction on this cluster by it instead of the published runs' band
    (planner.calibrate.error_bands)."""

    held_out_rows: int = Field(ge=1)
    held_out_step_time_ratio_90: tuple[float, float]
    # The training stacks and number formats of the fitted rows: efficiencies fitted on one stack and dtype
    # (DeepSpeed fp32 on CPUs) need not hold for another; simulate and optimize warn outside them. Empty: not
    # recorded (a spec calibrated before they were).
    frameworks: tuple[str, ...] = ()
    dtypes: tuple[Literal[DTYPES], ...] = ()
    # The uncalibrated spec's values of every parameter a calibration (this one or an earlier one it started
    # from) fitted: a recalibration reports and judges its fit against these, not against earlier fitted values.
    defaults: dict[str, float] = {}
    # The record lines of the calibrations this one started from, oldest first.
    earlier: tuple[str, ...] = ()

    @field_validator("frameworks")
    @classmethod
    def _known_frameworks(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        from planner.frameworks import FRAMEWORK_NAMES

        unknown = [name for name in names if name not in FRAMEWORK_NAMES]
        if unknown:
            raise ValueError(f"unknown framework {unknown[0]!r} (expected one of {', '.join(FRAMEWORK_NAMES)})")
        return names

    @field_validator("defaults")
    @classmethod
    def _efficiency_names(cls, values: dict[str, float]) -> dict[str, float]:
        unknown = [name for name in values if name not in Efficiency.model_fields]
        if unknown:
            raise ValueError(f"unknown efficiency parameter {unknown[0]!r}")
        if not all(math.isfinite(v) and v >= 0 for v in values.values()):
            raise ValueError("expected finite, non-negative values")
        return values

    def outside(self, framework: str, dtype: str) -> list[str]:
        """What of (framework, dtype) the fitted rows did not have, as 'framework X' / 'dtype Y' (empty: inside,
        or not recorded)."""
        return ([f"framework {framework}"] if self.frameworks and framework not in self.frameworks else []) + \
            ([f"dtype {dtype}"] if self.dtypes and dtype not in self.dtypes else [])

    @field_validator("held_out_step_time_ratio_90")
    @classmethod
    def _ordered_positive(cls, pair: tuple[float, float]) -> tuple[float, float]:
        low, high = pair
        # A step time predicted 1000x off is a unit error in the rows, not a band (assumed bound).
        if not (1e-3 <= low <= high <= 1e3):
            raise ValueError(f"expected [low, high] with 0.001 <= low <= high <= 1000 (measured / predicted), "
                             f"got [{low}, {high}]")
        return pair


class ClusterSpec(_Frozen):
    """A whole cluster spec, as loaded from YAML. Sizes in SI units."""

    name: str
    description: str = ""
    accelerator: Accelerator
    node: Node
    network: Network
    reliability: Reliability
    price_per_accelerator_hour: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    max_nodes: int = Field(default=4096, gt=0, le=MAX_NODES)
    efficiency: Efficiency = Efficiency()
    # Provenance of the efficiency block: the spec's defaults (cited measurements or assumptions) or "calibrated on FILES, DATE".
    calibration: str = ("uncalibrated: the spec's default efficiencies, measured where its efficiency block cites a "
                        "source, else assumed")
    # What a `planner calibrate` fit was measured against (None: not calibrated, or calibrated before it was kept).
    calibrated_on: CalibratedOn | None = None
    source_file: str = ""

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        # The name becomes a file name (`planner calibrate` writes <name>.calibrated.yaml beside the spec).
        if not name.strip() or name in (".", "..") or any(c in name for c in "/\\") or not name.isprintable():
            raise ValueError(f"expected a plain name (no '/', '\\' or control characters), got {name!r}")
        return name

    @model_validator(mode="after")
    def _one_node_without_network(self) -> "ClusterSpec":
        if (self.network.topology == "single-node" or self.network.nics_per_node == 0) and self.max_nodes != 1:
            raise ValueError(f"network.topology {self.network.topology} with nics_per_node "
                             f"{self.network.nics_per_node} has no way between nodes; set max_nodes: 1 "
                             f"(got {self.max_nodes})")
        return self

    @model_validator(mode="after")
    def _nvls_needs_hopper(self) -> "ClusterSpec":
        # NCCL searches NVLS graphs only at compute capability 9.0 and up (src/graph/search.cc:1124).
        capability = self.accelerator.compute_capability
        if self.node.scale_up.nvls and capability is not None and capability < 9.0:
            raise ValueError(f"node.scale_up.nvls: true needs accelerator.compute_capability 9.0 or more "
                             f"(NCCL runs NVLS from Hopper on), got {capability}")
        return self

    @property
    def default_training_dtype(self) -> str:
        """The number format plans on this cluster train in when none is given (DEFAULT_TRAINING_DTYPES); bf16
        where the spec has none of them (an fp8-only peak), so that peak_flops_per_s says what the spec lacks."""
        if self.accelerator.default_dtype is not None:
            return self.accelerator.default_dtype
        return next((d for d in DEFAULT_TRAINING_DTYPES if getattr(self.accelerator.peak_flops, d) is not None), "bf16")

    def peak_flops_per_s(self, dtype: str) -> float:
        """Dense peak for `dtype`; fp8 means fp8 matmuls. Raises when the accelerator lacks it."""
        value = getattr(self.accelerator.peak_flops, dtype, None) if dtype in DTYPES else None
        if value is None:
            supported = [d for d in DTYPES if getattr(self.accelerator.peak_flops, d) is not None]
            raise PlannerInputError(
                f"dtype {dtype!r} is not supported by cluster {self.name!r} (supported: {', '.join(supported)})"
            )
        return value

    def matmul_half_size(self, dtype: str = "bf16") -> float:
        """The calibrated half-efficiency GEMM size, or the roofline ridge 3 x peak / HBM bandwidth."""
        if self.efficiency.matmul_half_size is not None:
            return self.efficiency.matmul_half_size
        return 3.0 * self.peak_flops_per_s(dtype) / self.accelerator.hbm_bytes_per_s

    @property
    def gpus_per_node(self) -> int:
        return self.node.accelerators_per_node

    @property
    def total_gpus(self) -> int:
        """Every accelerator of the cluster: max_nodes x gpus_per_node (the most a plan may use)."""
        return self.max_nodes * self.gpus_per_node

    def with_efficiency(self, **changes: float) -> "ClusterSpec":
        """A copy with some efficiency parameters replaced (used by calibration and sensitivity)."""
        merged = self.efficiency.model_dump(by_alias=False) | changes
        return self.model_copy(update={"efficiency": Efficiency.model_construct(**merged)})

    def at_rows(self, pick) -> "ClusterSpec":
        """This spec for a sub-batch: each efficiency held as a per-row array (cost.efficiency_sweep prices several
        settings in one batch) taken by `pick` (an array of the whole batch -> its rows); itself when none is."""
        arrays = {name: pick(value) for name, value in dict(self.efficiency).items() if np.ndim(value) > 0}
        if not arrays:
            return self
        return self.model_copy(update={"efficiency": Efficiency.model_construct(**(dict(self.efficiency) | arrays))})


def parse_cluster_spec(data: object, source: str) -> ClusterSpec:
    """Validate a mapping (from YAML) into a ClusterSpec; `source` names the file in errors."""
    if not isinstance(data, dict):
        raise PlannerInputError(f"{source}: expected a YAML mapping with keys name, accelerator, node, network, reliability")
    try:
        spec = ClusterSpec.model_validate({**data, "source_file": source})
    except ValidationError as error:
        raise validation_input_error(error, source) from None
    return spec


def load_cluster_file(path: str | os.PathLike) -> ClusterSpec:
    return parse_cluster_spec(load_yaml_file(path, "cluster spec (.yaml)"), str(path))
