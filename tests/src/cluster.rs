//! Placeholder: the cluster harness is being written (see module docs above).
