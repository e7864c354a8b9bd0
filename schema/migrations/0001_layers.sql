CREATE TABLE `layers` (
	`diff_id` text PRIMARY KEY NOT NULL,
	`blob_digest` text NOT NULL,
	`media_type` text NOT NULL,
	`compression` text NOT NULL,
	`state` text DEFAULT 'pending' NOT NULL,
	`size` integer,
	`file_count` integer,
	`tar_key` text NOT NULL,
	`toc_key` text NOT NULL,
	`toc_digest` text,
	`queued_at` integer,
	`attempts` integer DEFAULT 0 NOT NULL,
	`error` text,
	`lease_owner` text,
	`lease_expires_at` integer,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL,
	`ready_at` integer
);
--> statement-breakpoint
CREATE INDEX `layers_blob` ON `layers` (`blob_digest`);--> statement-breakpoint
CREATE INDEX `layers_state` ON `layers` (`state`);