//! Every conformance suite, for every embedded backend.

use crate::fixtures::*;

mod sqlite_message_store {
    im_backends::message_store_suite!(super::sqlite);
}

mod sqlite_message_retention {
    im_backends::message_retention_suite!(super::sqlite);
}

mod sqlite_receipt_store {
    im_backends::receipt_store_suite!(super::sqlite);
}

mod sqlite_ceiling_store {
    im_backends::ceiling_store_suite!(super::sqlite);
}

mod sqlite_epoch_store {
    im_backends::epoch_store_suite!(super::sqlite);
}

mod sqlite_user_store {
    im_backends::user_store_suite!(super::sqlite);
}

mod sqlite_offline_store {
    im_backends::offline_store_suite!(super::sqlite);
}

mod sqlite_group_store {
    im_backends::group_store_suite!(super::sqlite);
}

mod sqlite_data_key_store {
    im_backends::data_key_store_suite!(super::sqlite);
}

mod sqlite_reseal_store {
    im_backends::reseal_store_suite!(super::sqlite);
}

mod memory_ceiling_store {
    im_backends::ceiling_store_suite!(super::memory_ceilings);
}

mod memory_epoch_store {
    im_backends::epoch_store_suite!(super::memory_ceilings);
}

mod memory_seq_allocator_over_memory {
    im_backends::seq_allocator_suite!(super::allocators_over_memory);
}

mod memory_seq_allocator_over_sqlite {
    im_backends::seq_allocator_suite!(super::allocators_over_sqlite);
}

mod memory_dedup_cache {
    im_backends::dedup_cache_suite!(super::memory_dedup);
}

mod memory_bus {
    im_backends::bus_suite!(super::memory_bus);
}

mod memory_registry {
    im_backends::registry_suite!(super::memory_registry);
}

mod memory_user_status_board {
    im_backends::user_status_board_suite!(super::memory_user_status_board);
}
