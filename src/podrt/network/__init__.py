"""CNI configuration discovery and plugin invocation, network namespaces."""
