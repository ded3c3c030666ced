"""The node: this process's connections, the replica of the cluster's live
state, and the plumbing between them. It knows no feature: features plug in
through :mod:`roomcast.node.feature`."""
