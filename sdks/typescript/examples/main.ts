#!/usr/bin/env node
/**
 * The example runner program: `node dist/examples/main.js --tcp-socket 127.0.0.1:PORT`
 * (an orchestrator appends `--tcp-socket` itself).
 */

import { runFromArgs } from "../src/index.js";
import { exampleRegistry } from "./runner.js";

void runFromArgs(exampleRegistry());
