"""The paper's published numbers (METHOD.md, "The paper's numbers"). Used only in the
columns labelled as the paper's; never as a result of ours."""

# Section 4.1, 35M models trained at 512: loss at ev = 1, 2, 4
SECTION41 = {
    "Sinusoidal": {1: 4.0, 2: 4.75, 4: 5.64},
    "RoPE": {1: 3.88, 2: 4.37, 4: 5.05},
    "ExPE": {1: 3.93, 2: 3.87, 4: 3.88},
}

# Table 7: loss ev = 1, 2, 4 and epoch time relative to ExPE
ABLATIONS = {
    "ExPE": {1: 3.93, 2: 3.87, 4: 4.26, "time": 1},
    "ExPE (p is stable)": {1: 4.26, 2: 4.21, 4: 4.24, "time": 1},
    "ExPE (l = 1)": {1: 4.48, 2: 4.83, 4: 6.01, "time": 1},
    "ExPE (learned, initialised)": {1: 3.88, 2: 3.82, 4: 4.89, "time": 1.6},
    "ExPE (learned)": {1: 7.33, 2: 7.34, 4: 7.61, "time": 1.6},
    "ExPE (once)": {1: 4.43, 2: 4.82, 4: 6.18, "time": 1},
}

# Section 4.2 (Table 1): loss ev = 1, 2, 4 and training time relative to Llama
LARGE = {
    "Llama S": {1: 2.89, 2: 3.80, 4: 4.95, "time": 1.00},
    "ExPE S": {1: 2.87, 2: 2.83, 4: 3.25, "time": 0.93},
    "ExQPE S": {1: 2.86, 2: 2.83, 4: 3.35, "time": 0.93},
    "Llama M": {1: 2.63, 2: 3.45, 4: 4.55, "time": 1.00},
    "ExPE M": {1: 2.63, 2: 2.59, 4: 2.71, "time": 0.78},
    "ExQPE M": {1: 2.63, 2: 2.59, 4: 2.68, "time": 0.78},
}

# Section 4.3: M models, loss ev = 1 ... 16, with and without the inference scale 1/2
SCALING = {
    "ExPE M": {1: 2.63, 2: 2.59, 4: 2.71, 8: 5.19, 16: 7.56},
    "ExPE M scaled by 1/2": {1: 2.76, 2: 2.71, 4: 2.68, 8: 2.98, 16: 5.65},
    "ExQPE M": {1: 2.63, 2: 2.59, 4: 2.68, 8: 5.01, 16: 7.39},
    "ExQPE M scaled by 1/2": {1: 2.74, 2: 2.69, 4: 2.65, 8: 2.76, 16: 4.98},
}

# Table 4: accuracy on HellaSwag / MMLU / ARC(-Challenge) / ARC-Easy
BENCHMARKS = {
    "Llama S": {"hellaswag": 0.29, "mmlu": 0.26, "arc_challenge": 0.24, "arc_easy": 0.30},
    "ExPE S": {"hellaswag": 0.28, "mmlu": 0.26, "arc_challenge": 0.24, "arc_easy": 0.29},
    "ExQPE S": {"hellaswag": 0.27, "mmlu": 0.26, "arc_challenge": 0.24, "arc_easy": 0.29},
    "Llama M": {"hellaswag": 0.31, "mmlu": 0.26, "arc_challenge": 0.26, "arc_easy": 0.30},
    "ExPE M": {"hellaswag": 0.31, "mmlu": 0.26, "arc_challenge": 0.25, "arc_easy": 0.30},
    "ExPE M scaled": {"hellaswag": 0.31, "mmlu": 0.26, "arc_challenge": 0.25, "arc_easy": 0.30},
    "ExQPE M": {"hellaswag": 0.32, "mmlu": 0.26, "arc_challenge": 0.25, "arc_easy": 0.31},
    "ExQPE M scaled": {"hellaswag": 0.32, "mmlu": 0.26, "arc_challenge": 0.25, "arc_easy": 0.31},
}
