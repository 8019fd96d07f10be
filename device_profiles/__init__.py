"""The built-in device profiles, one YAML file per target. Installed as edgecomp.device_profiles
(package data); edgecomp.profiles.loader reads them."""
