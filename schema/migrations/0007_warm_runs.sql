CREATE TABLE `warm_runs` (
	`id` text PRIMARY KEY NOT NULL,
	`request` text NOT NULL,
	`requested_by` text NOT NULL,
	`created_at` integer NOT NULL,
	`resolved_at` integer,
	`images` text
);
--> statement-breakpoint
CREATE INDEX `warm_runs_created` ON `warm_runs` (`created_at`);