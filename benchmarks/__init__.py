"""The side-by-side benchmark of DESIGN §7: colabmagic against the shell recipes and peers.

    python -m benchmarks [--files N] [--pairs N] [--profile bench|colab|fast]
                         [--data random|mixed] [--cases S1,Z,...] [--json PATH]
    python -m benchmarks --files 10000,100000,1000000    # scale mode (benchmarks.scale)

Each group of runs times colabmagic (its CLI and in-process), the shell line users run
today and the fastest tools a savvy user could type, in rotation from a cold start
(page cache dropped, simulated Drive reset), and reports median ratios against the
targets of issues 5 and 15.
"""
