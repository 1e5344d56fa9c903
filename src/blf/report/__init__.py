"""Records -> tables and figures: the paper's labels and order, the tables, the figures, and
what each study's report draws. Nothing here trains or attacks."""
