"""CDI, the Container Device Interface: vendors describe devices in spec files
(/etc/cdi, /var/run/cdi) as edits to a container's OCI spec, and a request
names them fully qualified, "vendor.com/class=name". Here: the name grammar
(names), one spec file read and checked (specfile), the files of the spec
dirs as one catalog (registry), and the edits applied to an OCI spec (edits)."""
