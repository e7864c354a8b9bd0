CREATE TABLE `maintenance` (
	`name` text PRIMARY KEY NOT NULL,
	`lease_owner` text,
	`lease_expires_at` integer,
	`last_run_at` integer
);
