"""The course's shared module: what every lab imports, one short file per concern.

Read it in this order: checks, device, data, schedule, flow, model, samplers,
guidance, distillation, weights, metrics, plotting. The commands that made the shipped
weights live beside it in tools/; docs/design.md has the measurements behind it.
"""
