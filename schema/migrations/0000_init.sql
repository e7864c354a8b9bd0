CREATE TABLE `repositories` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`upstream` text NOT NULL,
	`name` text NOT NULL,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `repositories_upstream_name` ON `repositories` (`upstream`,`name`);--> statement-breakpoint
CREATE TABLE `tags` (
	`repository_id` integer NOT NULL,
	`tag` text NOT NULL,
	`digest` text NOT NULL,
	`resolved_at` integer NOT NULL,
	PRIMARY KEY(`repository_id`, `tag`),
	FOREIGN KEY (`repository_id`) REFERENCES `repositories`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE TABLE `manifests` (
	`digest` text PRIMARY KEY NOT NULL,
	`media_type` text NOT NULL,
	`size` integer NOT NULL,
	`storage_key` text NOT NULL,
	`created_at` integer NOT NULL,
	`last_pulled_at` integer,
	`pull_count` integer DEFAULT 0 NOT NULL
);
--> statement-breakpoint
CREATE TABLE `blobs` (
	`digest` text PRIMARY KEY NOT NULL,
	`state` text DEFAULT 'pending' NOT NULL,
	`size` integer,
	`media_type` text,
	`storage_key` text NOT NULL,
	`upstream` text NOT NULL,
	`name` text NOT NULL,
	`attempts` integer DEFAULT 0 NOT NULL,
	`error` text,
	`lease_owner` text,
	`lease_expires_at` integer,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL,
	`ready_at` integer,
	`pull_count` integer DEFAULT 0 NOT NULL,
	`last_pulled_at` integer
);
--> statement-breakpoint
CREATE INDEX `blobs_state` ON `blobs` (`state`);--> statement-breakpoint
CREATE TABLE `manifest_blobs` (
	`manifest_digest` text NOT NULL,
	`blob_digest` text NOT NULL,
	`kind` text NOT NULL,
	`position` integer NOT NULL,
	PRIMARY KEY(`manifest_digest`, `blob_digest`)
);
--> statement-breakpoint
CREATE INDEX `manifest_blobs_blob` ON `manifest_blobs` (`blob_digest`);--> statement-breakpoint
CREATE TABLE `jobs` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`key` text NOT NULL,
	`kind` text NOT NULL,
	`payload` text NOT NULL,
	`state` text DEFAULT 'queued' NOT NULL,
	`attempts` integer DEFAULT 0 NOT NULL,
	`run_at` integer NOT NULL,
	`lease_owner` text,
	`lease_expires_at` integer,
	`last_error` text,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `jobs_key` ON `jobs` (`key`);--> statement-breakpoint
CREATE INDEX `jobs_runnable` ON `jobs` (`state`,`run_at`);