"""The planner from Python: simulate a layout, search the layouts of a chosen model, plan under a budget."""

import planner

# Will Llama-3 8B fit on one DGX H100 with tensor parallelism 8, and how fast is a step?
step = planner.simulate("llama3-8b", planner.make_layout(tp=8, micro_batch=1, global_batch=8), "dgx-h100")
print(f"simulate: fits {step['fits']}, step {step['step_time_s']:.3f} s, MFU {100 * step['mfu']:.1f}%")

# Every layout of that model on 64 GPUs, scored; rows() is what a DataFrame takes.
search = planner.search_layouts("llama3-8b", "dgx-h100", 64, tokens=1e12, frameworks=("megatron",))
best = search.rows([search.best])[0]
print(f"search_layouts: {len(search):,} layouts, best tp{best['tp']} pp{best['pp']} dp{best['dp']} "
      f"mb{best['micro_batch']} zero{best['zero']}, {best['step_time_s']:.3f} s/step")

# What to train with 1,000 GPU-hours.
result = planner.plan(1000, cluster="dgx-h100")
print(f"plan: {result.status}, {result.plan['params'] / 1e9:.2f}B params on {result.plan['tokens'] / 1e9:.0f}B tokens, "
      f"{result.plan['gpus']} GPUs, loss {result.plan['predicted_loss']:.3f}")
