"""Loss laws: published laws, a robust fitter, compute-optimal frontiers, batch-size limits.

Where things are:
  base.py              LossLaw interface (predict, compute_optimal, intervals, extrapolation warnings)
  chinchilla.py        E + A/N^alpha + B/D^beta with its closed-form frontier; Gadre's over-training view
  kaplan.py, farseer.py, data_constrained.py   the other forms
  published.py         built-in coefficients with sources; registry.py: load_law("epoch" | path.yaml)
  forms.py, parameters.py, fitter.py            fitting (Huber on log L, multi-start L-BFGS-B)
  bootstrap.py, holdout.py, fit_report.py       intervals, extrapolation check, the fit-law analysis
  data.py, law_file.py                          reading runs; saving/loading fitted laws
  batch_size.py        optimal / critical batch size and the token penalty above them
  annealing.py, curve_data.py   the loss curve under an LR schedule (Tissue et al. 2024) and logged curves
  inference.py         inference-aware sizing in FLOPs (Sardana et al. 2024), the paper check of --inference-tokens
  moe.py               mixture-of-experts law L(N total, D, granularity) (Krajewski et al. 2024), its fit
"""
