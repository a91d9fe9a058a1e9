"""mgrade-edge training: the mGRADE layer, its baselines, tasks and the train command."""
