CREATE TABLE `activity` (
	`bucket` integer NOT NULL,
	`metric` text NOT NULL,
	`value` integer DEFAULT 0 NOT NULL,
	PRIMARY KEY(`bucket`, `metric`)
);
--> statement-breakpoint
CREATE TABLE `upstream_health` (
	`host` text PRIMARY KEY NOT NULL,
	`last_success_at` integer,
	`last_error_at` integer,
	`last_error` text
);
