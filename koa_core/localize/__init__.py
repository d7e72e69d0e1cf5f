"""Finding knee joints on a whole film: the heatmap network, its card, training and labels."""
