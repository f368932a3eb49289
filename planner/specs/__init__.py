"""What a plan is made of, validated and frozen: units, the cluster spec (hardware, topology), the model
shape (dense and MoE), the parallel layout."""
