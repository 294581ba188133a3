# The config: config/config.yaml unless --configfile names others, then one check of every key.
import sys

from pipeline.config import ConfigError, check_config, load_yaml

try:
    # Files given with --configfile replace the default (they are merged over each other, then --config): the
    # embedded dataset's keys (data.generate) never leak into a run on other data.
    if not workflow.overwrite_configfiles:
        load_yaml("config/config.yaml")  # a YAML mistake names the file and line, before Snakemake reads it
        workflow.configfile("config/config.yaml")  # the configfile directive, which a formatter can parse here
    # Every problem of the config, one line each, before any job runs; the schema's defaults filled in.
    check_config(config, workflow.source_path("../schemas/config.schema.yaml"))
except ConfigError as e:
    sys.exit(str(e))
