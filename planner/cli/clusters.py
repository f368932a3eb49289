"""`planner clusters`: list the bundled (or --cluster-dir) cluster specs with their headline figures."""

from __future__ import annotations


def register(subparsers, name: str) -> None:
    parser = subparsers.add_parser(name, help="list cluster specs", description="List cluster specs and their key figures.")
    parser.add_argument("--cluster-dir", metavar="DIR", help="folder of cluster specs (default: the bundled ones)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def run(args) -> int:
    from planner.hardware import available_clusters, load_cluster
    from planner.render import human_bytes, json_document, table

    specs = [load_cluster(name, args.cluster_dir) for name in available_clusters(args.cluster_dir)]
    if args.json:
        print(json_document({"clusters": {s.name: s.model_dump(by_alias=False) for s in specs}}))
        return 0
    rows = []
    for s in specs:
        peak = s.accelerator.peak_flops
        rows.append([
            s.name, s.accelerator.name, s.gpus_per_node,
            f"{(peak.bf16 or peak.fp16 or peak.fp32) / 1e12:,.1f}", human_bytes(s.accelerator.hbm_bytes),
            f"{s.node.scale_up.link_bytes_per_s_per_direction / 1e9:,.0f}",
            f"{s.network.nics_per_node}x{s.network.nic_bytes_per_s_per_direction * 8 / 1e9:,.0f}Gb/s {s.network.topology}",
            f"${s.price_per_accelerator_hour:.2f}" if s.price_per_accelerator_hour else "-",
            "calibrated" if s.calibration.startswith("calibrated") else "defaults",
        ])
    print(table(["name", "accelerator", "per node", "16-bit TFLOP/s", "HBM", "scale-up GB/s", "network", "price/h",
                 "efficiency"], rows, align="llrrrrlrl"))
    return 0
