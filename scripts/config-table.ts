// `npm run -s config:table`: prints the README's table of configuration variables
// from the one schema (core/config.ts VARIABLES). test/unit/config.schema.test.ts fails
// when the README's copy differs.
import { variablesTable } from '../core/config.ts';

console.log(variablesTable());
