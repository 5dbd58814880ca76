"""Ray: the only part of the worker that imports it. ``ray_adapter`` turns the pure stages into
actors and tasks; ``ray_pools`` sizes and places their pools from the cluster's resources and
never waits forever on an actor that cannot be placed."""
