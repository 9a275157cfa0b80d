"""The side-by-side benchmark of DESIGN §7: colabmagic against the shell recipes.

    python -m benchmarks [--files N] [--pairs N] [--profile bench|colab|fast] [--json PATH]

Each case times a colabmagic command and the shell line users run today, alternating
A/B/A/B from a cold start (page cache dropped, simulated Drive reset), and reports
the median ratio colabmagic / shell against the targets of issue 5.
"""
