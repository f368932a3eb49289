"""`planner clusters`: every cluster spec a name resolves to, with where it comes from and its headline figures.

Names resolve in a stated order, first match wins (planner.specs.clusters.cluster_folders): the working
directory, the user spec folder (where `planner calibrate` writes), then the bundled specs; with
--cluster-dir in that folder alone.
"""

from __future__ import annotations


def register(subparsers, name: str) -> None:
    parser = subparsers.add_parser(name, help="list cluster specs and where each comes from",
                                   description=(__doc__ or "").split("\n\n")[0] + " " + (__doc__ or "").split("\n\n")[1])
    parser.add_argument("--cluster-dir", metavar="DIR",
                        help="list this folder of cluster specs only (default: the working directory, the user "
                             "spec folder and the bundled specs)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def _tflops_text(flops_per_s: float | None) -> str:
    """A 16-bit peak in TFLOP/s, to three significant figures below 1 TFLOP/s (cpu-local's 13.4 GFLOP/s reads
    0.0134, not 0.0); "-" for an accelerator without a 16-bit rate (its fp32 peak is not a 16-bit one)."""
    if flops_per_s is None:
        return "-"
    tflops = flops_per_s / 1e12
    return f"{tflops:,.1f}" if tflops >= 1 else f"{tflops:.3g}"


def run(args) -> int:
    from planner.specs.hardware import load_cluster_file
    from planner.specs.clusters import cluster_folders, find_clusters
    from planner.report.render import human_bytes, json_document, table

    found = [(origin, path, load_cluster_file(path), hidden) for _, origin, path, hidden in find_clusters(args.cluster_dir)]
    order = [{"origin": origin, "folder": str(folder)} for origin, folder in cluster_folders(args.cluster_dir)]
    if args.json:
        print(json_document({"search_order": order, "clusters": {
            path.name.removesuffix(".yaml"): {"origin": origin, "path": str(path), "hides": hidden,
                                              "default_training_dtype": s.default_training_dtype,
                                              **s.model_dump(by_alias=False)}
            for origin, path, s, hidden in found}}))
        return 0
    rows = []
    for origin, path, s, hidden in found:
        peak = s.accelerator.peak_flops
        rows.append([
            path.name.removesuffix(".yaml"), s.accelerator.name, s.gpus_per_node,
            _tflops_text(peak.bf16 or peak.fp16), s.default_training_dtype, human_bytes(s.accelerator.hbm_bytes),
            f"{s.node.scale_up.link_bytes_per_s_per_direction / 1e9:,.0f}",
            f"{s.network.nics_per_node}x{s.network.nic_bytes_per_s_per_direction * 8 / 1e9:,.0f}Gb/s {s.network.topology}",
            f"${s.price_per_accelerator_hour:.2f}" if s.price_per_accelerator_hour else "-",
            "calibrated" if s.calibration.startswith("calibrated") else "defaults",
            origin + (f" (hides {', '.join(hidden)})" if hidden else ""),
        ])
    # "trains in": the --dtype a plan on it takes when none is given (ClusterSpec.default_training_dtype).
    print(table(["name", "accelerator", "per node", "16-bit TFLOP/s", "trains in", "HBM", "scale-up GB/s", "network",
                 "price/h", "efficiency", "from"], rows, align="llrrlrrlrll"))
    print("\nnames resolve in this order, first match wins: "
          + "; ".join(f"{entry['origin']} ({entry['folder']})" for entry in order))
    return 0
