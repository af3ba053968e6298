"""The course's shared module: data, schedule, model, samplers, weights, metrics and plots.

Every lab imports it: `from shared import ...`. Each concern lives in its own
short file, read in this order: data, schedule, model, samplers, weights,
metrics, plotting.
"""
